"""The adapters figure: what each loaded LoRA adapter changes, the same seeds and conditions at growing scale."""
from __future__ import annotations

import textwrap
from pathlib import Path

from noisecraft.viz import plot_process

SCALES = (0.0, 0.5, 1.0)  # scale 0 draws the base's pixels exactly


def lora_figure(ctx, path: Path) -> dict:
    """Rows: the run's conditions (or --prompt / --class); columns: each loaded adapter at scales 0 (the base),
    0.5 and 1, the others at 0; every cell with the same seeds. The adapters' scales are restored afterwards."""
    pipe, o = ctx.pipe, ctx.options
    rows, kept = ctx.rows(o.n), dict(pipe.adapters.scales)
    columns, labels = [], []
    try:
        for name in kept:
            for scale in SCALES:
                pipe.set_loras({n: (scale if n == name else 0.0) for n in kept})
                columns.append(pipe.generate(n=o.n, labels=rows, sampler=o.sampler, steps=o.steps, seed=o.seed))
                labels.append(f"{name} x {scale:g}" if scale else "base (x 0)")
    finally:
        pipe.set_loras(kept)
    grid = [[col[r] for col in columns] for r in range(o.n)]
    names = [textwrap.fill(n, 16) for n in ctx.row_names(rows)]
    plot_process(grid, labels, f"LoRA scales ({o.sampler}, {o.steps} steps)", path, names)
    return {"adapters": {n: pipe.adapters.files[n].sha256 for n in kept}, "scales": list(SCALES),
            "rows": ctx.row_names(rows), "sampler": o.sampler, "steps": o.steps}
