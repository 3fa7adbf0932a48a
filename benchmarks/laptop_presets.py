"""The laptop presets of issue 22, each as a user runs it, side by side in one run: `train-autoencoder --preset
digits64-ae`, `train --preset digits64-latent` and `digits64-text-latent` on that autoencoder, and `train --preset
digits-text`, every command timed whole (start-up, data, caches, training, checkpoints, final figures) with the
kernels capped to AVX2 in fp32 (as on a laptop without AVX-512), then judged by its goal (see preset_search.py):
reconstructions (PSNR, judge), 500 class-balanced DDIM-50 samples, held-out paraphrases and attribute pairs.

Writes benchmarks/results/laptop_presets.json; `--readme` then rewrites the README's tables from the result files
(benchmarks/figures.py; the README's figures are never typed by hand, tests/test_docs.py checks they match).

    python benchmarks/laptop_presets.py            # both cores, nothing else running
    python benchmarks/laptop_presets.py --readme   # only re-render the README table from the JSON
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common.cli import train_capped
from common.judge import judge_autoencoder, judge_digits, judge_text
from common.machine import capped_env, describe
from common.real_avx2 import real_note, real_rows, real_wall
from common.results import loadavg

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "laptop_presets.json"
# (name, kind of judge (common.judge), the goal in seconds on a real 2-core AVX2 laptop, the quality goal)
PRESETS = (("digits64-ae", "ae", 300, "PSNR >= 30 dB, judged >= 97%"),
           ("digits64-latent", "latent", 300, "DDIM-50 judged >= 95%"),
           ("digits64-text-latent", "text", 420, "paraphrases >= 90%, pairs >= 85%"),
           ("digits-text", "text", 300, "paraphrases >= 90%, pairs >= 85%"),
           ("digits-flow", "latent", 300, "judged >= 95%"),
           ("digits-dit", "latent", 300, "judged >= 93%"))


def measure(args) -> dict:
    out = {"benchmark": "laptop_presets", "what": __doc__.splitlines()[0], "rows": []}
    kept = {r["preset"]: r for r in json.loads(RESULT.read_text())["rows"]} if args.only and RESULT.is_file() else {}
    ae = str(Path(args.work) / "digits64-ae")
    for name, kind, goal_s, goal_q in PRESETS:
        if args.only and name not in args.only:  # measured before, in the same work folder: kept as it is
            out["rows"].append(kept[name])
            continue
        rec = train_capped("train-autoencoder" if kind == "ae" else "train", name, Path(args.work) / name,
                           autoencoder=ae if name.startswith("digits64-") and kind != "ae" else None)
        t0 = time.perf_counter()
        quality = judge_autoencoder(rec["run"], capped_env()) if kind == "ae" else \
            judge_digits(rec["run"], args.n, capped_env()) if kind == "latent" else \
            judge_text(rec["run"], args.n, args.pair_seeds)
        out["rows"].append({"preset": name, "machine": rec.pop("machine"), "command": rec["command"],
                            "wall_s": rec["wall_s"],
                            "train_loop_s": rec["train_loop_s"], "steps": rec["steps"], "params": rec["params"],
                            "goal_laptop_s": goal_s, "quality_goal": goal_q,
                            "quality": quality, "judge_s": round(time.perf_counter() - t0, 1)})
        print(json.dumps(out["rows"][-1]), flush=True)
    out["load_average_after"] = loadavg()
    return out


def _quality(row: dict) -> str:
    q = row["quality"]
    if "psnr_db" in q:
        return f"{q['psnr_db']:.1f} dB, {100 * q['judge_accuracy']:.1f}% judged"
    if "ddim50_accuracy" in q:
        return f"{100 * q['ddim50_accuracy']:.1f}% of DDIM-50 samples judged right"
    return f"paraphrases {100 * q['paraphrase_accuracy']:.1f}%, attribute pairs {100 * q['pairs_overall']:.1f}%"


def _goal_value(q: dict, label: str) -> tuple[float, str]:
    """The figure a part of a quality goal ("PSNR", "judged", "DDIM-50 judged", "paraphrases", "pairs") is about."""
    if label == "PSNR":
        return q["psnr_db"], "dB"
    share = {"paraphrases": "paraphrase_accuracy", "pairs": "pairs_overall"}.get(
        label, "judge_accuracy" if "psnr_db" in q else "ddim50_accuracy")
    return 100 * q[share], "points"


def _goal(row: dict) -> str:
    """The row's quality goal, each part met or not and by how much: one run, so the margin is all there is to
    judge it by (no spread over seeds was measured)."""
    parts = []
    for part in row["quality_goal"].split(", "):
        label, bar = part.split(" >= ")
        value, unit = _goal_value(row["quality"], label)
        margin = value - float(bar.rstrip(" dB%"))
        verdict = ("**not met**" if margin < 0 else "met, **at the bar**" if margin < 1 else
                   f"met by {margin:.1f} {unit}")
        parts.append(f"{part}: {verdict}")
    return "; ".join(parts) + " (1 run)"


def render(result: dict) -> str:
    """The README's table of `result` (laptop_presets.json) beside the real AVX2 CPU's walls (real_avx2.json), each
    capped row with its machine (benchmarks/figures.py puts it between the README's `<!-- laptop_presets:
    begin/end -->` markers)."""
    rows, real = result["rows"], real_rows()
    names = {r["preset"]: describe({"machine": r["machine"]}, precision="fp32") for r in rows}
    where = "on the machine each row names" if len(set(names.values())) > 1 else f"on {names[rows[0]['preset']]}"
    lines = [f"Measured by `python benchmarks/laptop_presets.py` (`benchmarks/results/laptop_presets.json`) "
             f"{where}, one run a row, kernels capped to AVX2 in fp32 (the capped columns: faster than a real AVX2 "
             f"CPU, by a factor that differs per CPU, so these walls compare only with each other). On a real AVX2 "
             f"CPU: {real_note()}; its quality column is the file's own words, judged by a classifier independent of "
             "the project's.", "",
             "| command | wall (capped) | quality (capped run) | its quality goal | wall on a real AVX2 CPU | quality "
             "there | machine (capped) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        there = real.get(r["preset"])
        wall = real_wall(r["preset"], r["goal_laptop_s"]) if there else f"not measured (goal {r['goal_laptop_s']} s)"
        lines.append(f"| `{r['command'].split(' --out ')[0]}` | {r['wall_s']:.1f} s | {_quality(r)} | {_goal(r)} | {wall} | "
                     f"{(there or {}).get('quality', 'not judged there')} | {names[r['preset']]} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", action="store_true", help="only rewrite the README's table from the JSON")
    ap.add_argument("--n", type=int, default=500, help="samples judged (latent: DDIM-50; text: paraphrases)")
    ap.add_argument("--pair-seeds", type=int, default=10, help="text: seeds per digit and attribute")
    ap.add_argument("--work", default="/tmp/noisecraft-laptop-presets")
    ap.add_argument("--only", nargs="*", help="re-measure these presets, keeping the file's other rows (the latent "
                    "ones use the autoencoder run in --work)")
    args = ap.parse_args()
    if not args.readme:
        RESULT.write_text(json.dumps(measure(args), indent=2) + "\n")
    # the README's tables are benchmarks/figures.py's to render (a script imports no other script)
    subprocess.run([sys.executable, str(HERE / "figures.py"), "--readme"], check=True)


if __name__ == "__main__":
    main()
