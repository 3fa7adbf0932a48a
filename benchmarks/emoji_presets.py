"""The emoji presets of issue 27, each trained as a user types it (`noisecraft train --preset emoji32[-text]`, the
whole command timed in a subprocess, kernels capped to AVX2 in fp32 as on a laptop without AVX-512), then judged:

* emoji32-text: colour words obeyed. For each prompt "a {red|orange|yellow|green|blue|purple} {heart|circle|square}"
  --seeds images are drawn (the preset's sampler), and the share whose dominant hue, measured on the pixels as the
  captions measure it (captions.dominant_colour), is the colour named. Whether the emoji each prompt names is in the
  training split or held out is recorded beside it.
* emoji32: `noisecraft evaluate` (class-balanced samples judged by the emoji classifier, with the real held-out
  images' accuracy beside it, FD in its features, and the memorisation measure).

Each run appends one row to benchmarks/results/emoji_presets.json, with the machine, the cores and threads it ran
on and any --set overrides (the recipe search).

    taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/emoji_presets.py --preset emoji32-text --work /tmp/emoji
    taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/emoji_presets.py --preset emoji32 --set train.steps=1000
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from common.cli import train_cli
from common.colour_prompts import COLOURS, SHAPES
from common.judge import evaluate_cli
from common.machine import capped_env, record

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "emoji_presets.json"
# The goals (seconds: whole command on a real 2-core AVX2 laptop in fp32); emoji32 has none for its time.
GOALS = {"emoji32-text": {"laptop_s": 600, "colour_words": 0.8}, "emoji32": {}, "emoji64-ae": {},
         "emoji64-text-latent": {}}
AUTOENCODER = "emoji64-ae"  # what emoji64-text-latent trains in (the run of that name under --work)


def colour_words(run: str, seeds: int, **sample) -> dict:
    """Share of samples of the 18 colour prompts whose measured dominant hue is the one named, overall and per
    colour, and for prompts whose emoji is in the training split apart from those held out; `sample`: sampling
    settings other than the run's own."""
    import torch

    from noisecraft.captions import COLOURS as WORDS, dominant_colour
    from noisecraft.data import load_dataset
    from noisecraft.pipeline import load_pipeline
    from noisecraft.viz import save_grid

    pipe = load_pipeline(run, "cpu")
    train_texts = set(load_dataset(pipe.config.data, "train").captions.texts)
    prompts = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
    asked = [p for p in prompts for _ in range(seeds)]
    req = pipe.prepare(len(asked), prompt=asked, seed=20_000, precision="fp32", **sample)
    images = pipe.generate(request=req)
    got = dominant_colour(images)
    want = torch.tensor([WORDS.index(p.split()[1]) for p in asked])
    ok = got == want
    seen = torch.tensor([p in train_texts for p in asked])
    save_grid(images, Path(run) / "colour_prompts.png", nrow=seeds)
    share = lambda m: round(ok[m].float().mean().item(), 4) if bool(m.any()) else None  # noqa: E731
    return {"colour_accuracy": share(torch.ones_like(ok)), "n": len(asked), "seeds_per_prompt": seeds,
            "per_colour": {c: share(want == WORDS.index(c)) for c in COLOURS},
            "prompts_in_training_split": sorted({p for p, s in zip(asked, seen.tolist()) if s}),
            "accuracy_prompts_in_training_split": share(seen), "accuracy_prompts_held_out": share(~seen),
            "sampler": f"{req.options.sampler} {req.options.steps} steps, guidance {req.options.guidance}"}


def evaluate(run: str, n: int, env: dict) -> dict:
    r = evaluate_cli(run, n, ["--no-inception", "--no-progress"], env)
    off = r["offline"]
    pick = lambda d: {k: round(d[k], 4) for k in ("class_accuracy", "fd", "precision", "recall") if k in d}  # noqa
    return {"generated": pick(off["generated"]), "real_heldout": pick(off["real_heldout"]),
            "judge_heldout_accuracy": round(off["classifier"]["heldout_accuracy"], 4),
            "memorisation": off.get("memorisation"), "n": n,
            "chance": round(1 / len(off["generated"]["predicted_class_counts"]), 4)}


def reconstruction(run: str) -> dict:
    """An autoencoder run's reconstructions of the held-out emoji: PSNR and SSIM (`evaluate-autoencoder`)."""
    from noisecraft.evaluate.autoencoder import AutoencoderEvalOptions, evaluate_autoencoder

    r = evaluate_autoencoder(run, None, AutoencoderEvalOptions(n=300, device="cpu", classifier=False))
    return {k: round(r[k], 4) for k in ("psnr_db", "ssim") if k in r}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=tuple(GOALS), required=True)
    p.add_argument("--work", default="/tmp/noisecraft-emoji")
    p.add_argument("--set", action="append", default=[], help="a config override KEY=VALUE (the recipe search)")
    p.add_argument("--seeds", type=int, default=16, help="images per colour prompt")
    p.add_argument("--n", type=int, default=800, help="samples for emoji32's evaluate")
    args = p.parse_args()
    run = str(Path(args.work) / args.preset)
    env = capped_env()
    sub = "train-autoencoder" if args.preset == AUTOENCODER else "train"
    latent = ["--autoencoder", str(Path(args.work) / AUTOENCODER)] if args.preset.endswith("-latent") else []
    trained = train_cli(sub, args.preset, run, [*latent, "--overwrite", "--train.precision=fp32",
                                                 *(f"--{kv}" for kv in args.set)], env)
    t1 = time.perf_counter()
    if args.preset == AUTOENCODER:
        quality = reconstruction(run)
    elif "-text" in args.preset:
        quality = colour_words(run, args.seeds)
    else:
        quality = evaluate(run, args.n, env)
    row = {"preset": args.preset, "overrides": args.set, **trained, "goal": GOALS[args.preset], "quality": quality,
           "judge_s": round(time.perf_counter() - t1, 1),
           "machine": record("fp32", env, pinned_cpus=sorted(os.sched_getaffinity(0))),
           "note": "timed on the cores and threads named in machine; the goals are for 2 cores of a real AVX2 CPU"}
    rows = json.loads(RESULT.read_text())["rows"] if RESULT.is_file() else []
    RESULT.write_text(json.dumps({"benchmark": "emoji_presets", "what": __doc__.splitlines()[0],
                                  "rows": rows + [row]}, indent=2) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
