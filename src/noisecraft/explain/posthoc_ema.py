"""The `posthoc-ema` figure of `noisecraft explain`, for runs that kept post-hoc EMA profiles (train.posthoc_ema):
validation loss (and, class-conditional, judge accuracy and FD) against the EMA length sigma_rel, reconstructed
from the run's snapshots, beside the run's fixed EMA. It redraws `noisecraft ema --sweep`'s sweep.json when that is
of the run's latest snapshot; otherwise it runs a smaller sweep (EXPLAIN_N samples judged per length)."""
from __future__ import annotations

import json
from pathlib import Path

from noisecraft.rundir import RunDir, run_root

EXPLAIN_N = 200  # samples judged per EMA length when explain runs the sweep itself


def has_profiles(pipe) -> bool:
    """Whether the pipeline's run kept post-hoc EMA profiles and has snapshots to reconstruct from."""
    from noisecraft.phema import MIN_SNAPSHOTS

    if not pipe.config.train.posthoc_ema or pipe.path is None:
        return False
    return len(RunDir(run_root(pipe.path)).snapshots()) >= MIN_SNAPSHOTS


def posthoc_ema_figure(ctx, path: Path) -> dict:
    from noisecraft.evaluate.posthoc_ema import SWEEP_JSON, SweepOptions, plot_sweep, sweep

    root = run_root(ctx.pipe.path)
    cached = RunDir(root).posthoc_ema / SWEEP_JSON
    latest = RunDir(root).snapshots()[-1][0]
    result = json.loads(cached.read_text()) if cached.is_file() else None
    if result is None or result.get("snapshot_steps", [None])[-1] != latest:
        result = sweep(root, SweepOptions(n=EXPLAIN_N, device=str(ctx.pipe.device), seed=ctx.options.seed),
                       out=path.parent / "posthoc_ema_sweep")
    plot_sweep(result, path)
    return {"step": result["step"], "profiles": result["profiles"], "best": result["best"], "n": result["n"],
            "fixed_ema": {k: v for k, v in result["fixed_ema"].items() if k != "seconds"}}
