"""Editing measured on held-out digits, in one run: inpainting halves (judged class, known pixels, seam), which
digit shares which half (a source x asked matrix), img2img against strength (class kept, class changed, pixel
change) and what an edit costs in network calls and time against a full generation.

    python benchmarks/editing.py --checkpoint runs/digits --n 500
    python benchmarks/editing.py curve    # the docs' curve (docs/figures/editing/strength_curve.png) from the JSON

Every row edits the same N held-out images (the run's `val` split, never trained on) with the same per-image
seeds at the run's default sampler; the judge is the dataset's offline classifier (`noisecraft.evaluate`). The
seam is the mean absolute difference between the two pixel rows (or columns) on either side of the mask's edge,
divided by the same measure on the real images. Network calls are counted at the network (a forward hook), per
image, guidance's doubled batch included.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from common.machine import describe, record
from common.results import write_result

STRENGTHS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
RESULT = Path(__file__).resolve().parent / "results" / "editing.json"
CURVE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "editing" / "strength_curve.png"


class CallCounter:
    """Images passed through the network (a forward hook): calls per image = rows / images edited."""

    def __init__(self, net: torch.nn.Module):
        self.rows = 0
        net.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.rows += output.shape[0]


def seam(images: torch.Tensor, side: str) -> float:
    """Mean |difference| between the pixel rows/columns on either side of the middle edge of a `side` half."""
    x, h = images.float(), images.shape[-1] // 2
    if side in ("top", "bottom"):
        return (x[..., h, :] - x[..., h - 1, :]).abs().mean().item()
    return (x[..., :, h] - x[..., :, h - 1]).abs().mean().item()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="runs/digits", help="the digits quickstart run")
    p.add_argument("--n", type=int, default=500, help="held-out images edited per row")
    p.add_argument("--jumps", default="0,1,2", help="RePaint resamplings compared for inpainting the bottom half")
    p.add_argument("--strengths", default=",".join(str(s) for s in STRENGTHS))
    p.add_argument("--no-matrix", action="store_true", help="skip the 10 x 10 source x asked matrix")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULT.parent))
    args = p.parse_args(argv)

    from noisecraft.data import load_dataset
    from noisecraft.editing import half_mask
    from noisecraft.evaluate.classifier import get_classifier
    from noisecraft.pipeline import load_pipeline

    pipe = load_pipeline(args.checkpoint, "cpu")
    cfg, size = pipe.config, pipe.image_shape[-1]
    val = load_dataset(cfg.data, "val")
    images, labels = val.images[:args.n], val.labels[:args.n].long()
    n, k = len(images), pipe.num_classes
    clf = get_classifier(cfg.data)
    counter = CallCounter(pipe.denoiser.net)
    opts = pipe.resolve()
    print(f"checkpoint {pipe.path} (step {pipe.step}); {n} held-out images; sampler {opts.sampler} {opts.steps} "
          f"steps, guidance {opts.guidance:g}; judge held-out accuracy {clf.heldout_accuracy:.4f}; "
          f"{torch.get_num_threads()} threads", flush=True)

    def edit(asked: torch.Tensor, **kw) -> tuple[torch.Tensor, dict]:
        counter.rows = 0
        t0 = time.perf_counter()
        req = pipe.prepare(image=images, labels=asked, seed=args.seed, **kw)
        out = pipe.generate(request=req)
        wall = time.perf_counter() - t0
        return out, {"steps": req.options.steps, "jumps": req.options.jumps, "wall_s": round(wall, 3),
                     "images_per_s": round(n / wall, 2),
                     "network_calls_per_image": round(counter.rows / n, 3),
                     "judged_as_asked": round(clf.accuracy(out, asked), 4)}

    real_seams = {side: seam(images, side) for side in ("top", "bottom", "left", "right")}
    result = {"checkpoint": str(pipe.path), "checkpoint_step": pipe.step, "n": n, "seed": args.seed,
              "sampler": opts.sampler, "steps": opts.steps, "guidance": opts.guidance,
              "judge_heldout_accuracy": clf.heldout_accuracy, "machine": record("auto"), "real_seam": real_seams}
    result["generation"] = _generation(pipe, counter, labels, args.seed)
    result["inpaint_jumps"] = _inpaint_jumps(edit, labels, half_mask("bottom", size), images, real_seams,
                                             [int(j) for j in args.jumps.split(",")])
    result["inpaint_halves"] = _inpaint_halves(edit, labels, images, real_seams, size)
    if not args.no_matrix:
        result["inpaint_other_class"] = _matrix(edit, clf, labels, half_mask("bottom", size), k)
    result["img2img"] = _img2img(edit, labels, images, k, [float(s) for s in args.strengths.split(",")],
                                 opts.guidance_interval)
    write_result(result, args.out, "editing")
    return result


def _generation(pipe, counter, labels, seed) -> dict:
    counter.rows = 0
    t0 = time.perf_counter()
    pipe.generate(labels=labels, seed=seed)
    wall = time.perf_counter() - t0
    row = {"wall_s": round(wall, 3), "network_calls_per_image": round(counter.rows / len(labels), 3)}
    print(f"full generation: {row['network_calls_per_image']} calls/image, {wall:.2f} s", flush=True)
    return row


def _inpaint_jumps(edit, labels, mask, images, real_seams, jumps: list[int]) -> list[dict]:
    rows = []
    for j in jumps:
        out, row = edit(labels, mask=mask, jumps=j)
        known = ~mask.expand_as(out)
        row.update(jumps=j, known_max_abs_diff=int((out[known].int() - images[known].int()).abs().max()),
                   seam_ratio=round(seam(out, "bottom") / real_seams["bottom"], 3))
        print(f"inpaint bottom, true class, jumps {j}: judged {row['judged_as_asked']:.4f}, known max diff "
              f"{row['known_max_abs_diff']}, seam {row['seam_ratio']:.3f}x real, {row['network_calls_per_image']} "
              f"calls/image, {row['wall_s']:.2f} s", flush=True)
        rows.append(row)
    return rows


def _inpaint_halves(edit, labels, images, real_seams, size) -> list[dict]:
    from noisecraft.editing import HALVES, half_mask

    rows = []
    for side in HALVES:
        mask = half_mask(side, size)
        out, row = edit(labels, mask=mask)  # the default jumps
        known = ~mask.expand_as(out)
        row.update(side=side, known_max_abs_diff=int((out[known].int() - images[known].int()).abs().max()),
                   seam_ratio=round(seam(out, side) / real_seams[side], 3))
        print(f"inpaint {side:6s}, true class: judged {row['judged_as_asked']:.4f}, known max diff "
              f"{row['known_max_abs_diff']}, seam {row['seam_ratio']:.3f}x real", flush=True)
        rows.append(row)
    return rows


def _matrix(edit, clf, labels, mask, k: int) -> dict:
    """Share of source digit s (rows) judged as asked digit a (columns) after inpainting the bottom half."""
    matrix = torch.zeros(k, k)
    for a in range(k):
        out, _ = edit(torch.full_like(labels, a), mask=mask)
        hit = clf.predict(out)[0].argmax(1) == a
        for s in range(k):
            matrix[s, a] = hit[labels == s].float().mean()
    print("source x asked (bottom half regenerated), judged as asked:\n" +
          "\n".join(" ".join(f"{v:5.2f}" for v in row) for row in matrix.tolist()), flush=True)
    return {"side": "bottom", "rows": "source digit", "columns": "asked digit",
            "judged_as_asked": [[round(v, 3) for v in row] for row in matrix.tolist()]}


def _img2img(edit, labels, images, k: int, strengths: list[float], interval) -> list[dict]:
    """Per strength: the true class asked (kept?) and another class asked (followed?) at the defaults (guidance
    at every step below strength 1), and the true class again under the run's guidance interval, for the cost."""
    other = (labels + 1 + torch.arange(len(labels)) % (k - 1)) % k  # every other digit, in turn
    rows = []
    for s in strengths:
        kept, row = edit(labels, strength=s)
        _, row_other = edit(other, strength=s)
        _, row_interval = edit(labels, strength=s, guidance_interval=interval)
        row = {"strength": s, "steps": row["steps"], "class_kept": row["judged_as_asked"],
               "mean_abs_pixel_change": round((kept.float() - images.float()).abs().mean().item(), 2),
               "other_class_judged_as_asked": row_other["judged_as_asked"],
               "network_calls_per_image": row["network_calls_per_image"], "wall_s": row["wall_s"],
               "run_interval": {"class_kept": row_interval["judged_as_asked"],
                                "network_calls_per_image": row_interval["network_calls_per_image"],
                                "wall_s": row_interval["wall_s"]}}
        print(f"img2img strength {s:.1f} ({row['steps']} steps): class kept {row['class_kept']:.4f} (mean |change| "
              f"{row['mean_abs_pixel_change']:.1f}/255), other class asked -> judged as asked "
              f"{row['other_class_judged_as_asked']:.4f}; {row['network_calls_per_image']} calls/image "
              f"({row_interval['network_calls_per_image']} under the run's guidance interval)", flush=True)
        rows.append(row)
    return rows


def _machine(r: dict) -> str:
    return f"measured on {describe(r, precision='auto')}, 1 run"


def render_table(r: dict) -> str:
    """editing.json as markdown: inpainting (halves, then jumps compared) and img2img against strength."""
    g = r["generation"]["network_calls_per_image"]
    head = (f"`benchmarks/editing.py --n {r['n']}` on the `digits` run (step {r['checkpoint_step']}), "
            f"{r['sampler']} ({r['steps']} steps for a generation, {g:g} network calls an image), "
            f"{_machine(r)}; `editing.json`.")
    lines = [head, "", "| inpainting, true class asked | jumps | judged as asked | known pixels, max difference | "
             "seam / real digits' | network calls an image | wall |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in r["inpaint_halves"]:
        lines.append(f"| {row['side']} half | {row['jumps']} | {100 * row['judged_as_asked']:.1f}% | "
                     f"{row['known_max_abs_diff']} | {row['seam_ratio']:.2f}x | {row['network_calls_per_image']:g} | "
                     f"{row['wall_s']:.1f} s |")
    for row in r["inpaint_jumps"]:
        lines.append(f"| bottom half | {row['jumps']} | {100 * row['judged_as_asked']:.1f}% | "
                     f"{row['known_max_abs_diff']} | {row['seam_ratio']:.2f}x | {row['network_calls_per_image']:g} | "
                     f"{row['wall_s']:.1f} s |")
    lines += ["", "| img2img strength | steps run | true class asked: kept | mean pixel change (of 255) | another "
              "class asked: judged as it | network calls an image (/ generation) | under the run's guidance "
              "interval |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in r["img2img"]:
        calls, ri = row["network_calls_per_image"], row["run_interval"]["network_calls_per_image"]
        lines.append(f"| {row['strength']:g} | {row['steps']} | {100 * row['class_kept']:.1f}% | "
                     f"{row['mean_abs_pixel_change']:.1f} | {100 * row['other_class_judged_as_asked']:.1f}% | "
                     f"{calls:g} ({calls / g:.2f}x) | {ri:g} ({ri / g:.2f}x) |")
    return "\n".join(lines)


def render_matrix(r: dict) -> str:
    """The source x asked matrix of editing.json as a markdown table."""
    m = r.get("inpaint_other_class")
    if m is None:
        return "Not measured (run `python benchmarks/editing.py` without --no-matrix)."
    k = len(m["judged_as_asked"])
    lines = ["| source ↓ asked → | " + " | ".join(str(a) for a in range(k)) + " |", "|" + " --- |" * (k + 1)]
    for s_, row in enumerate(m["judged_as_asked"]):
        lines.append(f"| {s_} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    return "\n".join(lines) + f"\n\n{r['n']} held-out digits, bottom half regenerated; {_machine(r)}; `editing.json`."


def draw_curve(result_path: Path = RESULT, out: Path = CURVE) -> Path:
    """The docs' figure: class kept and class changed against strength, from the JSON."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = json.loads(Path(result_path).read_text())
    s = [row["strength"] for row in r["img2img"]]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    ax.plot(s, [row["class_kept"] for row in r["img2img"]], "o-", label="true class asked: judged as it (fidelity)")
    ax.plot(s, [row["other_class_judged_as_asked"] for row in r["img2img"]], "s-",
            label="another class asked: judged as it (realism)")
    ax2 = ax.twinx()
    ax2.plot(s, [row["mean_abs_pixel_change"] for row in r["img2img"]], "--", color="grey",
             label="mean |pixel change|, true class")
    ax.set_xlabel("strength (share of the noise levels run)")
    ax.set_ylabel("share of images")
    ax2.set_ylabel("mean |change| (of 255)")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="center left", fontsize=7)
    ax2.legend(loc="lower right", fontsize=7)
    ax.set_title(f"img2img of {r['n']} held-out digits ({r['sampler']}, {r['machine']['cpu']})", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["curve"]:
        print(draw_curve())
    else:
        main()
