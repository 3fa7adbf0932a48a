"""Judge a trained run's DDIM-50 samples at other classifier-free guidance weights than its own.

    python benchmarks/guidance_sweep.py --avx2 --run /work/runs/ditx/dit-cos --weights 2 3 [--interval lo,hi | all]

The same class-balanced requests and seed as common.judge's judge_digits (so the run's own weight reproduces
its `ddim50_accuracy`), the offline digits judge, in a child with the same kernel cap. Guidance costs nothing in
training: it asks whether a recipe's shortfall in judged accuracy is the sampler's or the network's. Appends one
JSON record per weight (with the machine, as recipes.py) to --out.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common.machine import capped_env, record
from common.results import append_record, json_from_child

JUDGE = """
import json, sys, time
from noisecraft.evaluate.classifier import classifier_accuracy
from noisecraft.pipeline import load_pipeline
run, n, weight, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
pipe = load_pipeline(run, "cpu")
n, labels = pipe.request(n)
kw = {} if not interval else {"guidance_interval": () if interval == "all" else tuple(map(float, interval.split(",")))}
t0 = time.perf_counter()
images = pipe.generate(n, labels=labels, sampler="ddim", steps=50, seed=10_000, precision="fp32", guidance=weight, **kw)
print(json.dumps({"ddim50_accuracy": round(float(classifier_accuracy(images, labels, dataset="digits")), 4),
                  "ddim50_sampling_s": round(time.perf_counter() - t0, 1)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--weights", type=float, nargs="+", required=True)
    ap.add_argument("--interval", default="", help="lo,hi or all (every step); default: the run's own")
    ap.add_argument("--avx2", action="store_true", help="sample with AVX2 kernels only, as the run was judged")
    ap.add_argument("--n", type=int, default=300, help="judged samples")
    ap.add_argument("--out", default="benchmarks/results/dit_guidance.jsonl")
    args = ap.parse_args()
    env = capped_env(args.avx2)
    for w in args.weights:
        rec = {"run": args.run, "variant": Path(args.run).name, "guidance": w, "guidance_interval": args.interval or
               "the run's", "n": args.n, "machine": record("fp32", env)}
        rec.update(json_from_child(JUDGE, args.run, args.n, w, args.interval, env=env))
        print(f"{rec['variant']:24s} w={w:g} DDIM-50 {rec['ddim50_accuracy']:.3f}", flush=True)
        append_record(args.out, rec)


if __name__ == "__main__":
    main()
