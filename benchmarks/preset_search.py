"""Search the recipes of the laptop presets by measurement (issue 22, item 6): train variants of a preset as a user
would, time the whole command, and judge the result the way that preset's goal is stated.

Each variant is config overrides on top of `--preset`, trained by the command a user types (`noisecraft train` or
`train-autoencoder`, final figures, validation and checkpoints as the preset sets them) in a subprocess with the
kernels capped to AVX2 in fp32, as on a laptop without AVX-512. Run this script pinned to the cores to measure on
(`taskset`, `OMP_NUM_THREADS`): the record names the cores and threads the command had. Then, by `--kind`:

* `ae` (digits64-ae): `noisecraft evaluate-autoencoder --checkpoint RUN --device cpu`: PSNR, SSIM, and the
  offline judge's accuracy on the reconstructions (goals >= 30 dB and >= 97%);
* `latent` (digits64-latent, `--autoencoder` an ae run): 500 class-balanced DDIM-50 samples at the preset's
  guidance, judged (common.judge's `judge_digits`, which adds DPM-Solver++ 10 steps; goal >= 95%);
* `text` (digits-text): held-out paraphrases and attribute pairs (common.judge's `judge_text`, the measures of
  text_to_image.py; goals >= 90% and >= 85%).

One JSON record per variant is appended to `--out`.

    taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/preset_search.py --kind ae --preset digits64-ae \
        --variants '{"c8": {"autoencoder.base_channels": 8}}'
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common.cli import train_capped
from common.judge import judge_autoencoder, judge_digits, judge_text
from common.machine import capped_env
from common.results import append_record, commit, loadavg

SUBCOMMAND = {"ae": "train-autoencoder", "latent": "train", "text": "train"}


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
               "note": args.note, "code": commit(), "load_average_before": loadavg()}
        rec.update(train_capped(SUBCOMMAND[args.kind], args.preset, Path(args.work) / name, overrides,
                                args.autoencoder))
        t0 = time.perf_counter()
        if args.kind == "ae":
            rec["quality"] = judge_autoencoder(rec["run"], capped_env())
        elif args.kind == "latent":  # under the cap the training ran with
            rec["quality"] = judge_digits(rec["run"], args.n, capped_env())
        else:
            rec["quality"] = judge_text(rec["run"], args.n, args.pair_seeds)
        rec["judge_s"] = round(time.perf_counter() - t0, 1)
        rec["load_average_after"] = loadavg()
        print(f"{name:28s} wall {rec['wall_s']:6.1f} s (loop {rec['train_loop_s']:6.1f} s)  {rec['quality']}",
              flush=True)
        append_record(args.out, rec)


if __name__ == "__main__":
    main()
