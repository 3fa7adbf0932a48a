"""Recipes searched on colour data: train an emoji preset with overrides, judge what a person sees, keep every row.

A text run (emoji32-text, emoji64-text-latent) is asked "a {colour} {heart|circle|square}" in forms its training
captions never hold verbatim: new word orders ("a heart in red", "a red coloured heart") and synonyms ("a crimson
heart", "a violet square"); the exact caption form is judged too, apart, with whether it is a training caption.
Each sample is judged on its pixels:

* the colour word: its dominant hue, measured as the captions measure it (`captions.dominant_colour`);
* the shape: its outline against the real "{colour} heart / circle / square" emoji (`evaluate.shapes.ShapeJudge`);
* the background: the share of pixels in a 3-pixel frame more than 8 levels off white, beside the real held-out
  emoji's.

A class run (emoji32) goes through `noisecraft evaluate` (the judge's class accuracy, FD, memorisation) plus the frame;
an autoencoder run (emoji64-ae) through `evaluate-autoencoder` (PSNR, SSIM, ΔE2000, the judge on reconstructions).
`--evaluate` adds `noisecraft evaluate`'s report for a text run (FD with its floors, memorisation).
`--judge-only RUN --sample guidance=3` judges a trained run at other sampling settings (guidance, interval,
sampler, steps) without training again. `--posthoc 0.05,0.1` judges EMAs of those widths reconstructed from a run
trained with `--set train.posthoc_ema=...` (Karras et al. 2024), one row each, beside the run's fixed EMA. Every
call appends one row (or one per EMA) to benchmarks/results/colour_search.jsonl.

    taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/colour_search.py --preset emoji32-text --name base
    python benchmarks/colour_search.py --preset emoji32-text --name flow --set diffusion.prediction=flow
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from common.cli import train_cli
from common.colour_prompts import COLOURS, FORMS, SHAPES, SYNONYMS
from common.judge import evaluate_cli
from common.machine import record
from common.results import append_record

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "colour_search.jsonl"
SAMPLE_KEYS = ("sampler", "steps", "guidance", "guidance_interval")


def prompts() -> list[dict]:
    """Every prompt judged: its text, the colour and shape it asks for, and its form. Its synonyms are never the
    ones captions may use (data.emoji_synonyms), so they stay words a run has not seen."""
    from noisecraft.captions import COLOUR_SYNONYMS

    assert not set(SYNONYMS.values()) & set(COLOUR_SYNONYMS.values())
    return [{"text": t.format(colour=c, shape=s, synonym=SYNONYMS[c]), "colour": c, "shape": s, "form": form}
            for form, templates in FORMS.items() for t in templates for c in COLOURS for s in SHAPES]


def share(ok, mask=None) -> float | None:
    m = ok if mask is None else ok[mask]
    return round(m.float().mean().item(), 4) if m.numel() else None


def judge_text(run: str, seeds: int, sample: dict) -> dict:
    """Colour, shape and background of --seeds samples of every prompt (one seed list shared by all prompts)."""
    import torch

    from noisecraft.captions import COLOURS as WORDS, dominant_colour
    from noisecraft.data import load_dataset
    from noisecraft.emoji import shape_examples
    from noisecraft.evaluate.shapes import ShapeJudge, frame_offwhite_share
    from noisecraft.pipeline import load_pipeline
    from noisecraft.viz import save_grid

    pipe = load_pipeline(run, "cpu")
    seen = set(load_dataset(pipe.config.data, "train").captions.texts)
    asked = [p for p in prompts() for _ in range(seeds)]
    req = pipe.prepare(len(asked), prompt=[p["text"] for p in asked],
                       seeds=[20_000 + i % seeds for i in range(len(asked))], **sample)
    images = pipe.generate(request=req)
    save_grid(images, Path(run).with_suffix(".png") if Path(run).is_file() else Path(run) / "colour_search.png",
              nrow=seeds * len(SHAPES))
    examples = shape_examples(pipe.config.data, SHAPES)
    shapes = ShapeJudge.from_examples(examples)
    colour_ok = dominant_colour(images) == torch.tensor([WORDS.index(p["colour"]) for p in asked])
    shape_ok = torch.tensor([g == p["shape"] for g, p in zip(shapes.judge(images), asked)])
    real_ok = torch.tensor([g == s for s, x in examples.items() for g in shapes.judge(x)])
    new = torch.tensor([p["text"] not in seen for p in asked])
    where = lambda key, value: torch.tensor([p[key] == value for p in asked])  # noqa: E731
    unseen = new & ~where("form", "caption")
    return {"n": len(asked), "seeds_per_prompt": seeds, "colour_unseen": share(colour_ok, unseen),
            "colour_unseen_per_colour": {c: share(colour_ok, unseen & where("colour", c)) for c in COLOURS},
            "colour_by_form": {f: share(colour_ok, where("form", f)) for f in FORMS},
            "colour_per_colour_by_form": {f: {c: share(colour_ok, where("form", f) & where("colour", c))
                                              for c in COLOURS} for f in FORMS},
            "caption_form_seen_share": share(~new, where("form", "caption")),
            "shape": share(shape_ok), "shape_per_shape": {s: share(shape_ok, where("shape", s)) for s in SHAPES},
            "real_shape": share(real_ok), "frame_offwhite": round(frame_offwhite_share(images), 4),
            "real_frame_offwhite": round(frame_offwhite_share(load_dataset(pipe.config.data, "val").images), 4),
            "sampler": {k: getattr(req.options, k) for k in SAMPLE_KEYS}}


def evaluate(run: str, n: int, env: dict, sample: dict) -> dict:
    """`noisecraft evaluate`'s report.json for `n` samples (the judge's figures, floors and memorisation), at the
    run's sampling settings or those of `sample`."""
    value = lambda v: (",".join(map(str, v)) or "all") if isinstance(v, list) else v  # noqa: E731 - [] = every step
    flags = [f"--{k.replace('_', '-')}={value(v)}" for k, v in sample.items()]
    out = Path(run).with_suffix("") / "eval" if Path(run).is_file() else None  # a checkpoint file's own folder
    report = evaluate_cli(run, n, ["--no-inception", "--no-progress", *flags], env, out)
    return {k: report[k] for k in ("offline", "text") if report.get(k)}


def judge_class(run: str, n: int, env: dict, sample: dict) -> dict:
    """`noisecraft evaluate`'s offline figures for a class run, and the frame of its samples."""

    from noisecraft.evaluate.shapes import frame_offwhite_share
    from noisecraft.pipeline import load_pipeline

    off = evaluate(run, n, env, sample)["offline"]
    pipe = load_pipeline(run, "cpu")
    images = pipe.generate(request=pipe.prepare(256, list(range(pipe.num_classes)), seed=30_000, **sample))
    return {"offline": off, "frame_offwhite": round(frame_offwhite_share(images), 4)}


def judge_autoencoder(run: str) -> dict:
    """An autoencoder run's reconstructions of the held-out emoji: PSNR, SSIM, ΔE2000 and the judge on them."""
    from noisecraft.evaluate.autoencoder import AutoencoderEvalOptions, evaluate_autoencoder

    r = evaluate_autoencoder(run, None, AutoencoderEvalOptions(device="cpu"))
    return {k: r[k] for k in ("psnr_db", "ssim", "delta_e2000", "judge") if k in r}


def train(args, run: str, env: dict) -> dict:
    sub = "train-autoencoder" if args.preset.endswith("-ae") else "train"
    latent = ["--autoencoder", args.autoencoder] if args.autoencoder else []
    return train_cli(sub, args.preset, run, [*latent, "--overwrite", *(f"--{kv}" for kv in args.set)], env)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="emoji32-text")
    p.add_argument("--name", required=True, help="the variant's name in the result file")
    p.add_argument("--work", default="/tmp/noisecraft-colour")
    p.add_argument("--set", action="append", default=[], help="a training override KEY=VALUE")
    p.add_argument("--sample", action="append", default=[], help="a sampling setting KEY=VALUE (judge only)")
    p.add_argument("--judge-only", metavar="RUN", help="judge this trained run; train nothing")
    p.add_argument("--autoencoder", help="the autoencoder run of a latent preset")
    p.add_argument("--seeds", type=int, default=8, help="images per prompt")
    p.add_argument("--n", type=int, default=600, help="samples for a class run's evaluate")
    p.add_argument("--evaluate", action="store_true", help="a text run also through `noisecraft evaluate` (--n)")
    p.add_argument("--posthoc", metavar="A,B,...", help="also judge the post-hoc EMAs of these widths (sigma_rel)")
    args = p.parse_args()
    env = dict(os.environ)
    run = args.judge_only or str(Path(args.work) / args.name)
    row = {"name": args.name, "preset": args.preset, "overrides": args.set, "sample": args.sample}
    if not args.judge_only:
        row.update(train(args, run, env))
    sample = {k: json.loads(v) if v[:1] in "[0123456789-" else v for k, v in (kv.split("=", 1) for kv in args.sample)}
    if not (args.judge_only and args.posthoc):  # a judged run's post-hoc EMAs alone
        judge_row(row, run, args, env, sample)
    for sigma_rel in [float(s) for s in args.posthoc.split(",")] if args.posthoc else []:
        from noisecraft.phema import write_posthoc_checkpoint

        ckpt = str(write_posthoc_checkpoint(run, sigma_rel))
        judge_row({**row, "name": f"{args.name}-phema{sigma_rel:g}", "posthoc_ema": sigma_rel}, ckpt, args, env,
                  sample)


def judge_row(row: dict, run: str, args, env: dict, sample: dict) -> None:
    """Judge `run` (a run directory or a checkpoint file in one) and append `row` with its figures."""
    from noisecraft.precision import use_bf16
    from noisecraft.rundir import run_root

    t1 = time.perf_counter()
    config = json.loads((run_root(run) / "config.json").read_text())
    if config["train"]["task"] == "autoencoder":
        row["quality"] = judge_autoencoder(run)
    elif config["model"].get("text_encoder"):
        row["quality"] = judge_text(run, args.seeds, sample)
        if args.evaluate:
            row["quality"]["evaluate"] = evaluate(run, args.n, env, sample)
    else:
        row["quality"] = judge_class(run, args.n, env, sample)
    bf16 = use_bf16("cpu", config["train"]["precision"])
    row.update(judge_s=round(time.perf_counter() - t1, 1), run=run,
               machine=record("bf16 autocast" if bf16 else "fp32", env, pinned_cpus=sorted(os.sched_getaffinity(0))))
    append_record(RESULT, row)
    print(json.dumps({k: row[k] for k in ("name", "quality")}, indent=1))


if __name__ == "__main__":
    main()
