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
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "laptop_presets.json"
# (name, kind for preset_search's judges, the goal in seconds on a real 2-core AVX2 laptop, the quality goal)
PRESETS = (("digits64-ae", "ae", 300, "PSNR >= 30 dB, judged >= 97%"),
           ("digits64-latent", "latent", 300, "DDIM-50 judged >= 95%"),
           ("digits64-text-latent", "text", 420, "paraphrases >= 90%, pairs >= 85%"),
           ("digits-text", "text", 300, "paraphrases >= 90%, pairs >= 85%"),
           ("digits-flow", "latent", 300, "judged >= 95%"),
           ("digits-dit", "latent", 300, "judged >= 93%"))


def measure(args) -> dict:
    sys.path.insert(0, str(HERE))
    from preset_search import judge_ae, judge_latent, judge_text, train

    out = {"benchmark": "laptop_presets", "what": __doc__.splitlines()[0], "rows": []}
    kept = {r["preset"]: r for r in json.loads(RESULT.read_text())["rows"]} if args.only and RESULT.is_file() else {}
    ae = str(Path(args.work) / "digits64-ae")
    for name, kind, goal_s, goal_q in PRESETS:
        if args.only and name not in args.only:  # measured before, in the same work folder: kept as it is
            out["rows"].append(kept[name])
            continue
        run_args = argparse.Namespace(work=args.work, kind=kind, preset=name,
                                      autoencoder=ae if name.startswith("digits64-") and kind != "ae" else None)
        rec = train(name, {}, run_args)
        t0 = time.perf_counter()
        quality = judge_ae(rec["run"]) if kind == "ae" else judge_latent(rec["run"], args.n) if kind == "latent" \
            else judge_text(rec["run"], args.n, args.pair_seeds)
        out["rows"].append({"preset": name, "machine": rec.pop("machine"), "command": rec["command"],
                            "wall_s": rec["wall_s"],
                            "train_loop_s": rec["train_loop_s"], "steps": rec["steps"], "params": rec["params"],
                            "goal_laptop_s": goal_s, "goal_capped_s": round(goal_s * 0.4), "quality_goal": goal_q,
                            "quality": quality, "judge_s": round(time.perf_counter() - t0, 1)})
        print(json.dumps(out["rows"][-1]), flush=True)
    out["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return out


def _quality(row: dict) -> str:
    q = row["quality"]
    if "psnr_db" in q:
        return f"{q['psnr_db']:.1f} dB, {100 * q['judge_accuracy']:.1f}% judged"
    if "ddim50_accuracy" in q:
        return f"{100 * q['ddim50_accuracy']:.1f}% of DDIM-50 samples judged right"
    return f"paraphrases {100 * q['paraphrase_accuracy']:.1f}%, attribute pairs {100 * q['pairs_overall']:.1f}%"


def cap_factor(cpu: str = "AMD EPYC") -> tuple[float, dict, dict]:
    """How much faster the AVX2 cap on machine `cpu` runs than a real AVX2-only EPYC: the quickstart of issue 14
    (the preset `digits-v` now) on the real one (real_avx2_epyc.json) over the same command under the cap on `cpu`
    (a quickstart_v_avx2*.json of that CPU: benchmarks/quickstart.py --avx2 --preset digits-v --name ...).
    Returns the factor, the real run's record and the capped run's (with its file name)."""
    real = json.loads((HERE / "results" / "real_avx2_epyc.json").read_text())
    for path in sorted((HERE / "results").glob("quickstart_v_avx2*.json")):
        capped = json.loads(path.read_text())
        if capped["machine"]["cpu"] == cpu and capped["preset"] == "digits-v":
            return real["wall_s"] / capped["wall_seconds"], real, {**capped, "file": path.name}
    raise LookupError(f"no quickstart_v_avx2*.json measured on {cpu}: run benchmarks/quickstart.py --avx2 "
                      "--preset digits-v --name quickstart_v_avx2_<machine> there first")


def factor_note(cpus: list[str]) -> str:
    """How the laptop estimates for runs capped on `cpus` are made, in one sentence."""
    each = []
    for cpu in cpus:
        factor, real, capped = cap_factor(cpu)
        each.append(f"{capped['wall_seconds']:g} s on {cpu} (`{capped['file']}`: x {factor:.2f})")
    return (f"the `digits-v` quickstart took {real['wall_s']:g} s on a real 2-core AVX2-only EPYC "
            f"({real['source_short']}, `real_avx2_epyc.json`) and, capped, " + " and ".join(each)
            + "; each row's capped wall times its CPU's factor")


def render(result: dict) -> str:
    """The README's table of `result` (laptop_presets.json), each row with its machine (benchmarks/figures.py puts
    it between the README's `<!-- laptop_presets: begin/end -->` markers)."""
    sys.path.insert(0, str(HERE))
    from figures import machine

    rows = result["rows"]  # each row with the machine it was measured on
    names = {r["preset"]: machine({"machine": r["machine"]}, precision="fp32") for r in rows}
    factors = {r["machine"]["cpu"]: cap_factor(r["machine"]["cpu"])[0] for r in rows}
    where = "on the machine each row names" if len(set(names.values())) > 1 else f"on {names[rows[0]['preset']]}"
    lines = [f"Measured by `python benchmarks/laptop_presets.py` (`benchmarks/results/laptop_presets.json`) {where}, "
             "one run a row, kernels capped to AVX2 in fp32. The goals are for a real 2-core AVX2 laptop, and the "
             "capped machines here run faster than one, each by its own factor, so the estimate column is an "
             f"estimate, not a measurement: {factor_note(list(factors))}.", "",
             "| command | wall (capped) | quality | estimated on a real AVX2 laptop | machine |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        factor = factors[r["machine"]["cpu"]]
        lines.append(f"| `{r['command'].split(' --out ')[0]}` | {r['wall_s']:.1f} s | {_quality(r)} | about "
                     f"{round(r['wall_s'] * factor, -1):.0f} s (goal {r['goal_laptop_s']} s) | {names[r['preset']]} |")
    return "\n".join(lines)


def rewrite_readme() -> None:
    sys.path.insert(0, str(HERE))
    from figures import rewrite_readme as rewrite

    rewrite()


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
    rewrite_readme()


if __name__ == "__main__":
    main()
