"""The `prompt-editing` figure of `noisecraft explain` (text runs): one seed's x0 estimates over the steps under a
prompt A, a prompt B, A edited into B half-way (`[A:B:0.5]`) and the two alternating (`[A|B]`). The edited row
shares A's estimates up to the switch, then turns towards B while keeping what the first steps settled."""
from __future__ import annotations

from pathlib import Path

import torch

from noisecraft.conditioning.prompt_syntax import has_syntax
from noisecraft.viz import plot_panels

WHEN = 0.5  # the edited row switches prompts half-way
SHOWN_STEPS = 5  # x0 estimates shown per row


def _pair(ctx) -> tuple[str, str]:
    """A and B: the first two `--prompts`, else two captions of the run's data."""
    o = ctx.options
    a, b = (o.prompts[:2] if len(o.prompts) >= 2 else ctx.rows(2))
    return a, b


def _quoted(prompt: str) -> str:
    """A prompt written inside [..:..:..] or [..|..]: its own ':' and '|' escaped when it is plain text."""
    return prompt if has_syntax(prompt) else prompt.replace(":", "\\:").replace("|", "\\|")


def prompt_editing_figure(ctx, path: Path) -> dict:
    """Rows A, B, [A:B:WHEN], [A|B] from one seed: x0 estimates at SHOWN_STEPS steps, then the image."""
    pipe, o = ctx.pipe, ctx.options
    a, b = _pair(ctx)
    prompts = [a, b, f"[{_quoted(a)}:{_quoted(b)}:{WHEN:g}]", f"[{_quoted(a)}|{_quoted(b)}]"]
    req = pipe.prepare(labels=prompts, seeds=[o.seed] * len(prompts))
    total = req.options.steps
    keep = sorted(set(torch.linspace(1, total, SHOWN_STEPS).round().long().tolist()))
    x0 = {i: {} for i in range(len(prompts))}
    images = {}
    for ev in pipe.stream(request=req):
        if ev.kind == "step" and ev.step in keep:
            for i, img in zip(ev.indices, pipe.decode(ev.x0)):
                x0[i][ev.step] = img
        elif ev.kind == "images":
            images.update(zip(ev.indices, ev.images))
    rows = [[x0[i][k] for k in keep] + [images[i]] for i in range(len(prompts))]
    names = ["A", "B", f"[A:B:{WHEN:g}]", "[A|B]"]
    panel = (rows, [f"x̂0, step {k}" for k in keep] + ["image"], names,
             f"A = '{a}', B = '{b}'; the edit switches after step {int(WHEN * total)}")
    plot_panels([panel], f"prompt editing and alternation ({req.options.sampler}, {total} steps, seed {o.seed})",
                path)
    return {"prompts": prompts, "steps": total, "sampler": req.options.sampler, "shown_steps": keep,
            "switch_after_step": int(WHEN * total)}
