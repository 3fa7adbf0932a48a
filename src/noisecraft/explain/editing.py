"""The `editing` figure of `noisecraft explain`: one held-out image edited by img2img (SDEdit) at growing
strength, under its own condition and another, and inpainted (RePaint) on each half with the x0 estimate over
the steps."""
from __future__ import annotations

from pathlib import Path

import torch

from noisecraft.editing import HALVES, half_mask
from noisecraft.viz import plot_panels

STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)
SHOWN_STEPS = 4  # x0 estimates shown per inpainting row


def editing_figure(ctx, path: Path) -> dict:
    """img2img rows (the image's own condition, then another) across strengths; one inpainting row per half."""
    pipe, o = ctx.pipe, ctx.options
    source = ctx.data.images[o.seed % len(ctx.data.images)][None]  # (1, C, H, W), never trained on

    def own_class() -> int:  # the source's
        return int(ctx.data.labels[o.seed % len(ctx.data.labels)])

    asked = pipe.conditioner.edit_rows(own_class, ctx.rows)
    names = ctx.row_names(asked) if asked is not None else ["nothing (unconditional)"]
    rows = []
    for i in range(len(names)):
        cond = None if asked is None else asked[i:i + 1]
        rows.append([source[0]] + [pipe.img2img(source, s, labels=cond, seed=o.seed)[0] for s in STRENGTHS])
    img2img = (rows, ["source"] + [f"strength {s:g}" for s in STRENGTHS], [f"asked: {n}"[:18] for n in names],
               "img2img (SDEdit): noised to the strength's level, then denoised")
    own = None if asked is None else asked[:1]
    inpainted = [_inpaint_row(pipe, source, half_mask(side, source.shape[-1]), own, o.seed) for side in HALVES]
    steps, jumps = inpainted[0][1], inpainted[0][2]
    inpaint = ([row for row, _, _ in inpainted], ["regenerated (grey)", *[f"x̂0, step {k}" for k in steps], "result"],
               [f"{side} half" for side in HALVES],
               f"inpainting (RePaint, {jumps} resampling(s) a step): the known half is kept")
    plot_panels([img2img, inpaint], f"editing a held-out image ({pipe.resolve().sampler})", path)
    return {"strengths": list(STRENGTHS), "rows": names, "halves": list(HALVES), "shown_steps": steps,
            "jumps": jumps}


def _inpaint_row(pipe, source, mask, cond, seed) -> tuple[list[torch.Tensor], list[int], int]:
    """[the source with the mask greyed, x0 estimates at SHOWN_STEPS steps, the result], the steps, the jumps."""
    req = pipe.prepare(image=source, mask=mask, labels=cond, seed=seed)
    total = req.options.steps
    keep = sorted(set(torch.linspace(1, total, SHOWN_STEPS).round().long().tolist()))
    x0, result = {}, None
    for ev in pipe.stream(request=req):
        if ev.kind == "step" and ev.step in keep:
            x0[ev.step] = pipe.decode(ev.x0)[0]
        elif ev.kind == "images":
            result = ev.images[0]
    greyed = torch.where(mask[0], torch.full_like(source[0], 128), source[0])
    return [greyed, *[x0[k] for k in keep], result], keep, req.options.jumps
