"""Search the recipes of the laptop presets by measurement (issue 22, item 6): train variants of a preset as a user
would, time the whole command, and judge the result the way that preset's goal is stated.

Each variant is config overrides on top of `--preset`, trained by the command a user types (`noisecraft train` or
`train-autoencoder`, final figures, validation and checkpoints as the preset sets them) in a subprocess with the
kernels capped to AVX2 in fp32, as on a laptop without AVX-512. Run this script pinned to the cores to measure on
(`taskset`, `OMP_NUM_THREADS`): the record names the cores and threads the command had. Then, by `--kind`:

* `ae` (digits64-ae): `noisecraft evaluate-autoencoder --checkpoint RUN --device cpu`: PSNR, SSIM, and the
  offline judge's accuracy on the reconstructions (goals >= 30 dB and >= 97%);
* `latent` (digits64-latent, `--autoencoder` an ae run): 500 class-balanced DDIM-50 samples at the preset's
  guidance, judged (benchmarks/recipes.py's `judge`, which adds DPM-Solver++ 10 steps; goal >= 95%);
* `text` (digits-text): held-out paraphrases and attribute pairs (benchmarks/text_to_image.py's measures; goals
  >= 90% and >= 85%).

One JSON record per variant is appended to `--out`.

    taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/preset_search.py --kind ae --preset digits64-ae \
        --variants '{"c8": {"autoencoder.base_channels": 8}}'
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_info  # noqa: E402
from recipes import AVX2_ENV  # noqa: E402

SUBCOMMAND = {"ae": "train-autoencoder", "latent": "train", "text": "train"}


def train(name: str, overrides: dict, args) -> dict:
    """The whole `noisecraft ...` command as a user types it (plus --no-progress), in fp32 with AVX2 kernels."""
    run = Path(args.work) / name
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "noisecraft", SUBCOMMAND[args.kind], "--preset", args.preset, "--out", str(run),
           "--no-progress", "--train.precision=fp32", *(f"--{k}={v}" for k, v in overrides.items())]
    if args.autoencoder:
        cmd += ["--autoencoder", args.autoencoder]
    env = dict(os.environ, **AVX2_ENV)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    summary = json.loads((run / "summary.json").read_text())
    return {"run": str(run), "command": " ".join(["noisecraft", *cmd[3:]]), "wall_s": round(wall, 1),
            "train_loop_s": round(summary["train_seconds"], 1), "steps": summary["steps"], "params": summary["params"],
            "machine": {**cpu_info(env), "threads": int(os.environ.get("OMP_NUM_THREADS") or 0) or None,
                        "pinned_cpus": sorted(os.sched_getaffinity(0)), "precision": "fp32"}}


def judge_ae(run: str) -> dict:
    env = dict(os.environ, **AVX2_ENV)
    subprocess.run([sys.executable, "-m", "noisecraft", "evaluate-autoencoder", "--checkpoint", run, "--device", "cpu"],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = json.loads((Path(run) / "eval-autoencoder" / "report.json").read_text())
    return {"psnr_db": round(r["psnr_db"], 2), "ssim": round(r["ssim"], 4),
            "judge_accuracy": round(r["judge"]["accuracy"], 4),
            "originals_judge_accuracy": round(r["judge"]["originals_accuracy"], 4),
            "fd_clf": round(r["judge"]["fd_clf"], 2), "latent_scale": r["latent_scale"]}


def judge_latent(run: str, n: int) -> dict:
    from recipes import judge

    return judge(run, n, dict(os.environ, **AVX2_ENV))  # under the cap the training ran with


def judge_text(run: str, n: int, pair_seeds: int) -> dict:
    from text_to_image import attribute_pairs, paraphrase_accuracy

    from noisecraft.pipeline import load_pipeline

    pipe = load_pipeline(run, "cpu")
    opts = pipe.resolve(precision="fp32", seed=10_000)
    para = paraphrase_accuracy(pipe, opts, n)
    pairs = attribute_pairs(pipe, opts, pair_seeds)
    return {"paraphrase_accuracy": para["accuracy"], "paraphrase_n": para["n"],
            "pairs_overall": pairs["overall"], **{f"pairs_{k}": pairs[k]["agreement"] for k in
                                                   ("thickness", "slant", "size")},
            "sampling": {"sampler": opts.sampler, "steps": opts.steps, "guidance": opts.guidance},
            "judge_sampling_s": round(para["sampling_seconds"] + pairs["sampling_seconds"], 1)}


def _commit() -> str | None:
    """The commit of the code measured (with "+dirty" when the working tree differs from it)."""
    def git(*a):
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    head = git("rev-parse", "--short", "HEAD")
    return head and head + ("+dirty" if git("status", "--porcelain", "--", "../src") else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=sorted(SUBCOMMAND), required=True)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--variants", required=True, help='JSON {"name": {"section.field": value, ...}, ...}')
    ap.add_argument("--autoencoder", help="latent presets: the autoencoder run (--autoencoder of `train`)")
    ap.add_argument("--n", type=int, default=500, help="samples judged (latent: per sampler; text: paraphrases)")
    ap.add_argument("--pair-seeds", type=int, default=10, help="text: seeds per digit and attribute")
    ap.add_argument("--note", default="", help="a word on the conditions, kept in every record")
    ap.add_argument("--work", default="/tmp/noisecraft-preset-search")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "preset_search.jsonl"))
    args = ap.parse_args()
    for name, overrides in json.loads(args.variants).items():
        rec = {"variant": name, "preset": args.preset, "overrides": overrides, "autoencoder": args.autoencoder,
               "note": args.note, "code": _commit(), "load_average_before": [round(v, 2) for v in os.getloadavg()]}
        rec.update(train(name, overrides, args))
        t0 = time.perf_counter()
        if args.kind == "ae":
            rec["quality"] = judge_ae(rec["run"])
        elif args.kind == "latent":
            rec["quality"] = judge_latent(rec["run"], args.n)
        else:
            rec["quality"] = judge_text(rec["run"], args.n, args.pair_seeds)
        rec["judge_s"] = round(time.perf_counter() - t0, 1)
        rec["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
        print(f"{name:28s} wall {rec['wall_s']:6.1f} s (loop {rec['train_loop_s']:6.1f} s)  {rec['quality']}",
              flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
