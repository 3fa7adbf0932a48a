"""Post-hoc EMA on the digits recipe (issue 26): train `--preset digits-v` keeping the two power-function profiles,
then reconstruct EMAs of many lengths from the snapshots and score each beside the preset's fixed EMA
(ema_decay 0.995): validation loss on the held-out split (as training computes it) and N class-balanced samples at
the preset's sampler judged by the offline classifier (accuracy, Frechet distance in its features). The same
seeds for every EMA, so the comparison is paired. Goal: the best reconstructed length beats the fixed EMA on
validation loss or judge accuracy, or the docs show that it does not.

    taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/posthoc_ema.py --run runs/digits-phema \\
        --docs-figures docs/figures/posthoc
"""
from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

from common.cli import train_cli
from common.machine import describe, record
from common.results import write_result
from common.tables import pct, table

SIGMA_RELS = (0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.12, 0.14, 0.17, 0.20, 0.25)
PROFILES = "0.05,0.10"


def train(run: Path, every: int) -> dict:
    """`noisecraft train --preset digits-v` (the quickstart the results were measured on, before issue 26) with the
    profiles on, as a user runs it; wall time and snapshot bytes."""
    rec = train_cli("train", "digits-v", run, ["--overwrite", f"--train.posthoc_ema={PROFILES}",
                                               f"--train.posthoc_every={every}"])
    snaps = sorted((run / "ema_snapshots").glob("step_*.safetensors"))
    return {"command": rec["command"], "wall_s": rec["wall_s"], "snapshots": len(snaps),
            "snapshot_mb": round(sum(f.stat().st_size for f in snaps) / 2**20, 2)}


def paired_note(result: dict) -> dict:
    """The judge's binomial standard error at the fixed EMA's accuracy (what one seed set can resolve)."""
    f = result["fixed_ema"]
    if "class_accuracy" not in f:
        return {}
    p, n = f["class_accuracy"], result["n"]
    return {"judge_accuracy_standard_error": math.sqrt(p * (1 - p) / n)}


def paired_val_loss(run: Path, result: dict) -> dict:
    """The best length's validation loss against the fixed EMA's, image by image with the same noise (the loop of
    the validation loss, kept per image: `diffusion.held_out_losses`): the mean difference and its standard error."""
    import torch

    from noisecraft.evaluate.posthoc_ema import Scorer
    from noisecraft.phema import load_params, posthoc_source, reconstruct

    ckpt, snaps = posthoc_source(run)
    sigma = result["best"]["val_loss"]["sigma_rel"]
    (params,), _ = reconstruct(snaps, [sigma])
    scorer = Scorer(ckpt, torch.device("cpu"))

    def per_image(weights):
        load_params(scorer.pipe.denoiser.net, weights)
        return torch.cat([b.float() for b in scorer.held_out_losses()])

    fixed = per_image(scorer.fixed)
    diff = per_image(params) - fixed
    return {"sigma_rel": sigma, "fixed_val_loss_recomputed": float(fixed.mean()), "mean_difference": float(diff.mean()),
            "standard_error": float(diff.std() / len(diff) ** 0.5), "images": len(diff)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="runs/digits-phema")
    p.add_argument("--every", type=int, default=25, help="train.posthoc_every")
    p.add_argument("--n", type=int, default=1000, help="samples judged per EMA")
    p.add_argument("--skip-train", action="store_true", help="score an existing run")
    p.add_argument("--skip-sweep", action="store_true", help="with --skip-train: keep the result file's sweep, "
                   "redo only the paired validation-loss comparison")
    p.add_argument("--docs-figures", help="also draw `noisecraft explain --figures posthoc-ema` of the run here")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)


    from noisecraft.evaluate.posthoc_ema import SweepOptions, sweep

    run = Path(args.run)
    if args.skip_sweep:
        out = json.loads((Path(args.out) / "posthoc_ema.json").read_text())
    else:
        trained = None if args.skip_train else train(run, args.every)
        t0 = time.perf_counter()
        result = sweep(run, SweepOptions(SIGMA_RELS, n=args.n, device="cpu"))
        sweep_s = time.perf_counter() - t0
        out = {"benchmark": "posthoc_ema", "what": __doc__.split("\n\n")[0], "machine": record("auto (the preset's)"),
               "train": trained, "sweep_s": round(sweep_s, 1),
               **{k: v for k, v in result.items() if k not in ("checkpoint", "out")},
               **paired_note(result)}
    out["paired_val_loss"] = paired_val_loss(run, out)
    write_result(out, args.out, "posthoc_ema")
    if args.docs_figures:
        subprocess.run([sys.executable, "-m", "noisecraft", "explain", "--checkpoint", str(run), "--out",
                        args.docs_figures, "--figures", "posthoc-ema", "--device", "cpu"], check=True)
    return out


def render(d: dict) -> str:
    """The sweep as a table for the docs: each length's figures, the fixed EMA's, and the machine."""

    judged = "class_accuracy" in d["fixed_ema"]
    best = {m: b["sigma_rel"] for m, b in d["best"].items()}

    def row(name, r):
        cells = [name, f"{r['val_loss']:.5f}" + (" (best)" if best.get("val_loss") == r.get("sigma_rel") else "")]
        if judged:
            cells += [pct(r["class_accuracy"]) + (" (best)" if best.get("class_accuracy") == r.get("sigma_rel")
                                                   else ""), f"{r['fd_clf']:.1f}"]
        return cells

    f = d["fixed_ema"]
    rows = [row(f"fixed EMA, decay {f['ema_decay']} (its own sigma_rel {f['sigma_rel']:.3f})", f)]
    rows += [row(f"post-hoc sigma_rel {r['sigma_rel']:g}", r) for r in d["reconstructed"]]
    header = ["EMA", "validation loss"] + ([f"judged right ({d['n']} samples)", "FD (judge features)"] if judged
                                           else [])
    t = d["train"] or {}
    command = re.sub(r" --out \S+ --overwrite", "", t.get("command", "noisecraft train --preset digits-v"))
    note = (f"Measured by one run of `{command}` ({d['step']} steps, "
            f"{t.get('snapshots', len(d['snapshot_steps']))} snapshots of both profiles, "
            f"{t.get('snapshot_mb', '?')} MB), every EMA scored with the same seeds ({d['sampler']}); judge standard "
            f"error at the fixed EMA's accuracy {pct(d.get('judge_accuracy_standard_error', 0))}.{_paired(d)} "
            f"Machine: "
            f"{describe(d)}. File: `posthoc_ema.json`.")
    return table(header, [[*r] for r in rows]) + "\n\n" + note + (_reading(d) if judged else "")


def _reading(d: dict) -> str:
    """What the sweep says, from the file: the two lowest validation losses, the judge's peak, and the lengths
    within two of the judge's standard errors of the fixed EMA's accuracy."""
    r, fixed, se = d["reconstructed"], d["fixed_ema"]["class_accuracy"], d["judge_accuracy_standard_error"]
    low = sorted(r, key=lambda x: x["val_loss"])[:2]
    top = max(x["class_accuracy"] for x in r)
    near = [x["sigma_rel"] for x in r if abs(x["class_accuracy"] - fixed) <= 2 * se]
    peak = ", ".join(f"{x['sigma_rel']:g}" for x in r if x["class_accuracy"] == top)
    return (f" Read from the table: the lowest validation losses at sigma_rel {low[0]['sigma_rel']:g} and "
            f"{low[1]['sigma_rel']:g}; the judge's accuracy highest at {peak} "
            f"({'the fixed EMA' + chr(39) + 's score' if top == fixed else 'above the fixed EMA'}); within two standard "
            f"errors of the fixed EMA's accuracy: sigma_rel {min(near):g} to {max(near):g}.")


def _paired(d: dict) -> str:
    p = d.get("paired_val_loss")
    if not p:
        return ""
    return (f" Validation loss of sigma_rel {p['sigma_rel']:g} minus the fixed EMA's, image by image with the same "
            f"noise: {p['mean_difference']:.2e} (standard error {p['standard_error']:.1e}, {p['images']} held-out "
            f"images).")


if __name__ == "__main__":
    main()
