"""Non-leaking augmentation on a small training set (issue 26): the digits preset trained on a 500-image subset of
the digits for the same steps, with augmentation off and on, 3 seeds each, then

  * FD-clf: the Fréchet distance in the offline judge's features between N class-balanced samples (the preset's
    sampler) and the judge's reference set (the digits train split, 4,500 images), mean and std over seeds;
    and the same against the held-out split (500 images the judge never saw, none of them trained on), since the
    judge's features place its own training images closest, so copies of the 500 training images score well
    against the train split whatever they teach about digits;
  * memorisation: the share of samples nearer (in the judge's features) to one of the 500 training images than
    5% of real held-out digits are (evaluate.memorisation);
  * the leak check: slant and size of the samples measured from their pixels (captions.measure_attributes: image
    moments), against the real digits' (the train split): mean, std and the two-sample Kolmogorov-Smirnov
    statistic. Two references frame it: real held-out digits (what no leak looks like at this N) and the real
    digits passed through the same augmentation with the labels thrown away (what a full leak would look like).

    taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/augment.py                      # augment.json
    taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/augment.py --steps 2000 --seeds 0 1 --name augment_2000
    # the flow quickstart, long enough to memorise, each seed's two runs side by side on the two cores
    python benchmarks/augment.py --preset digits --steps 6000 --val-every 500 --p 0.12 --n 1000 --parallel \
        --name augment_flow
    python benchmarks/augment.py --preset digits --steps 12000 --val-every 1000 --p 0.12 --n 1000 --parallel \
        --name augment_flow_12000
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from common.machine import record
from common.results import write_result

AUGMENT = ("translate", "scale", "rotate", "aniso")  # no flips: a mirrored 2 or 5 is another glyph


def train_command(out: Path, preset: str, steps: int, seed: int, subset: int, augment: tuple[str, ...],
                  p: float, val_every: int) -> list[str]:
    """`noisecraft train --preset PRESET` on the subset, as a user runs it."""
    cmd = [sys.executable, "-m", "noisecraft", "train", "--preset", preset, "--out", str(out), "--overwrite",
           f"--data.subset={subset}", f"--train.steps={steps}", f"--train.seed={seed}",
           f"--train.val_every={val_every or steps}", f"--train.ckpt_every={steps}", f"--train.sample_every={steps}",
           "--train.final_figures=false", "--device", "cpu"]
    if augment:
        cmd += [f"--data.augment={','.join(augment)}", f"--data.augment_p={p}"]
    return cmd


def run_timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run one training command; its printed summary and wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    return {"train_wall_s": round(wall, 1), "precision": summary.get("precision"), "params": summary.get("params")}


def train_all(commands: dict[str, list[str]], parallel: bool) -> dict[str, dict]:
    """Run the training commands one after another, or side by side each pinned to its own core with one thread."""
    if not parallel:
        return {name: run_timed(cmd) for name, cmd in commands.items()}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with ThreadPoolExecutor(len(commands)) as pool:
        futures = {name: pool.submit(run_timed, ["taskset", "-c", str(core), *cmd], env)
                   for core, (name, cmd) in enumerate(commands.items())}
    return {name: f.result() for name, f in futures.items()}


def ks(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import ks_2samp

    return float(ks_2samp(a.numpy(), b.numpy()).statistic)


def attributes(images: torch.Tensor, real: dict) -> dict:
    """Slant and size of uint8 digits: mean, std and the KS statistic against the real digits'."""
    from noisecraft.captions import measure_attributes

    got = measure_attributes(images)
    return {k: {"mean": float(got[k].mean()), "std": float(got[k].std()), "ks_vs_real": ks(got[k], real[k])}
            for k in ("slant", "size")}


def references(subset: int, p: float, n: int) -> dict:
    """The real digits' attributes, the judge, and the no-leak / full-leak reference rows."""
    from noisecraft.augment import Draws, augment
    from noisecraft.captions import measure_attributes
    from noisecraft.config import DataConfig
    from noisecraft.data import load_dataset, to_model_range, to_uint8
    from noisecraft.evaluate.classifier import get_classifier, reference_features

    full, val = load_dataset(DataConfig(dataset="digits"), "train"), load_dataset(DataConfig(dataset="digits"), "val")
    real = measure_attributes(full.images)
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(full), generator=g)[:n]
    x = to_model_range(full.images[pick])
    leaked, _ = augment(x, AUGMENT, p, Draws(g, len(x), slice(0, len(x)), torch.device("cpu")))
    clf = get_classifier(DataConfig(dataset="digits"))
    features = reference_features(clf, DataConfig(dataset="digits"))  # both splits', cached with the judge
    train, heldout = features["train_features"], features["val_features"]
    subset_features, other = train[:subset], train[subset:2 * subset]  # data.subset: the split's first N
    return {"real": real, "clf": clf, "train_features": train, "subset_features": subset_features,
            "heldout_features": heldout,
            "rows": {"real_heldout": attributes(val.images, real),
                     "real_augmented_labels_dropped": attributes(to_uint8(leaked), real)},
            # FD of real images against the held-out split: the floor a perfect model reaches at this N
            "fd_heldout_floor": {"training_subset": fd(subset_features, heldout),
                                 "other_train_images": fd(other, heldout)}}


def fd(a: torch.Tensor, b: torch.Tensor) -> float:
    from noisecraft.evaluate.frechet import frechet_distance_stats, gaussian_stats

    return frechet_distance_stats(gaussian_stats(a), gaussian_stats(b))


def judge(run: Path, n: int, ref: dict, val_every: int) -> dict:
    """The figures of a run's last checkpoint and, when validation ran during training, of its best one by
    validation loss (what `sample` and `serve` load by default: early stopping) under "best"."""
    row = judge_checkpoint(run / "checkpoints" / "last.safetensors", n, ref)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    row["val_loss"] = [[r["step"], r["val_loss"]] for r in log if "val_loss" in r]  # memorising: it rises
    if val_every:
        best = run / "checkpoints" / "best.safetensors"
        row["best"] = {"step": json.loads(best.with_suffix(".json").read_text())["step"],
                       **judge_checkpoint(best, n, ref)}
    return row


def judge_checkpoint(run: Path, n: int, ref: dict) -> dict:
    """FD-clf, judge accuracy, memorisation and the slant/size rows of n class-balanced samples of a checkpoint."""
    from noisecraft.evaluate.memorisation import memorisation
    from noisecraft.pipeline import load_pipeline

    pipe = load_pipeline(run, "cpu")
    labels = torch.arange(n) % 10
    t0 = time.perf_counter()
    images = pipe.generate(labels=labels, seed=0)
    sample_s = time.perf_counter() - t0
    logits, feats = ref["clf"].predict(images)  # once: every figure below reads these
    mem = memorisation(feats, ref["subset_features"], ref["heldout_features"])
    return {"fd_clf": fd(feats, ref["train_features"]), "fd_clf_heldout": fd(feats, ref["heldout_features"]),
            "class_accuracy": (logits.argmax(1) == labels).float().mean().item(),
            "near_copy_share": mem["near_copy_share"],
            "near_copy_share_heldout": mem["heldout_share"], "sample_s": round(sample_s, 1),
            **attributes(images, ref["real"])}


def summary(runs: list[dict]) -> dict:
    """Mean and std over seeds of each figure."""
    keys = ("fd_clf", "fd_clf_heldout", "class_accuracy", "near_copy_share")
    out = {k: {"mean": float(np.mean([r[k] for r in runs])), "std": float(np.std([r[k] for r in runs], ddof=1))}
           for k in keys}
    for a in ("slant", "size"):
        for s in ("mean", "std", "ks_vs_real"):
            out[f"{a}_{s}"] = float(np.mean([r[a][s] for r in runs]))
    return out


def result(args, ref: dict, runs: dict[str, list[dict]], t0: float) -> dict:
    """The JSON of the runs so far (`complete` once every seed has both settings)."""
    from noisecraft.config import preset

    cfg = preset(args.preset)
    s = cfg.sample
    means = {k: summary(v) for k, v in runs.items() if len(v) > 1}
    out = {
        "benchmark": "augment", "machine": record(),
        "pinned": ("each training run on its own core, OMP_NUM_THREADS=1, two side by side" if args.parallel else
                   "one core, OMP_NUM_THREADS=1" if os.environ.get("OMP_NUM_THREADS") == "1" else None),
        "setup": {"preset": args.preset, "subset": args.subset, "steps": args.steps, "val_every": args.val_every,
                  "batch_size": cfg.train.batch_size,
                  "seeds": args.seeds, "augment": list(AUGMENT), "augment_p": args.p, "samples_judged": args.n,
                  "sampler": f"the preset's ({s.sampler}, {s.steps} steps, guidance {s.guidance} on sigma > "
                             f"{s.guidance_interval[0]:g})",
                  "fd_reference": "the judge's reference: the digits train split (4,500 images)",
                  "attributes_reference": "the digits train split (4,500 images), captions.measure_attributes"},
        "complete": all(len(v) == len(args.seeds) for v in runs.values()),
        "runs": runs, "summary": means, "references": ref["rows"],
        "fd_heldout_floor": ref["fd_heldout_floor"], "wall_s": round(time.perf_counter() - t0, 1),
    }
    if args.val_every:
        out["summary_best"] = {k: summary([r["best"] for r in v]) for k, v in runs.items() if len(v) > 1}
    for which in ("summary", "summary_best"):
        if len(out.get(which, {})) == 2:
            out.update(goal(out[which], "" if which == "summary" else "_best"))
    return out


def goal(means: dict, label: str) -> dict:
    """The goal, against each reference: augmentation's FD lower by more than twice the larger seed std."""
    out = {}
    for key, suffix in (("fd_clf", ""), ("fd_clf_heldout", "_heldout")):
        gap = means["off"][key]["mean"] - means["on"][key]["mean"]
        noise = max(means["off"][key]["std"], means["on"][key]["std"])
        out.update({f"fd_gap_off_minus_on{suffix}{label}": gap, f"fd_seed_std_max{suffix}{label}": noise,
                    f"goal_fd_lower_beyond_seed_noise{suffix}{label}": bool(gap > 2 * noise)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="digits-v", help="the recipe (default: the one augment.json and "
                    "augment_2000.json were measured with, the quickstart before issue 26)")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--subset", type=int, default=500)
    ap.add_argument("--p", type=float, default=0.2, help="data.augment_p")
    ap.add_argument("--n", type=int, default=500, help="samples judged per run")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--name", default="augment", help="the result file's name (without .json)")
    ap.add_argument("--val-every", type=int, default=0, help="validate every N steps and judge the best "
                    "checkpoint by validation loss too (default: validate once, at the end)")
    ap.add_argument("--parallel", action="store_true", help="train a seed's two settings side by side, each "
                    "pinned to its own core (of the first two) with one thread")
    args = ap.parse_args()
    t0 = time.perf_counter()
    ref = references(args.subset, args.p, args.n)
    settings = {"off": (), "on": AUGMENT}
    runs: dict[str, list[dict]] = {k: [] for k in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            commands = {name: train_command(Path(tmp) / f"{name}-{seed}", args.preset, args.steps, seed, args.subset,
                                            augment, args.p, args.val_every) for name, augment in settings.items()}
            for name, row in train_all(commands, args.parallel).items():
                row = {"seed": seed, **row, **judge(Path(tmp) / f"{name}-{seed}", args.n, ref, args.val_every)}
                runs[name].append(row)
                print(name, json.dumps(row), flush=True)
            write_result(result(args, ref, runs, t0), args.out, args.name)  # what is done so far
    write_result(result(args, ref, runs, t0), args.out, args.name)


if __name__ == "__main__":
    main()
