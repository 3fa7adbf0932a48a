"""Prompt syntax measured on the `digits-text` run (issue 37): weights, weights of 1, and prompt editing.

    python benchmarks/prompt_syntax.py --checkpoint runs/digits-text --n 200

Every prompt is drawn for the same N seeds (image i: seed + i) at the run's default sampler, steps and guidance,
so rows compare image by image.
* weights: "a (bold:1.5) seven" and "a (thin:1.5) seven" against "a seven": each image's ink (its ink mass,
  the sum of pixel / 255) and stroke thickness (`captions.measure_attributes`); the mean paired difference, its
  standard error, and whether it lies beyond its spread (more than twice its standard error from 0); the share of
  seeds where the weighted prompt drew more ink. With --words, "a bold seven" and "a thin seven" (the words,
  unweighted) give the scale of what the model learnt from captions.
* weights of 1: "a (seven:1)" against "a seven": the share of pixels that are identical.
* prompt editing "[a three:a seven:W]" for each W of --whens: the share the offline judge (`evaluate.classifier`)
  calls a 7, and how far each image's thickness and slant lie from the same seed's "a three", beside the same for a
  plain "a seven" (the goal: closer, with >= 80% judged 7s).
* the size restored after weighting: over the run's training captions, each real token weighted 1.5 in turn,
  A1111's mean-restoring factor (the states' mean before over after) against the root-mean-square one used here.
Prints and writes benchmarks/results/prompt_syntax.json with the machine (CPU model, ISA flags, threads).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from common.machine import describe, record
from common.results import write_result

RESULT_DIR = Path(__file__).resolve().parent / "results"
BASE = "a seven"
WEIGHTED = {"bold": "a (bold:1.5) seven", "thin": "a (thin:1.5) seven"}
WORDS = {"bold": "a bold seven", "thin": "a thin seven"}
ONES = ("a (seven:1)",)
EDIT = "[a three:a seven:{when}]"
WHENS = (0.5,)


def ink(images: torch.Tensor) -> torch.Tensor:
    """(N,) the ink mass of uint8 digits (N, 1, H, W): the sum of pixel / 255."""
    return images.float().div(255).flatten(1).sum(1)


def paired(a: torch.Tensor, b: torch.Tensor) -> dict:
    """a - b over the same seeds: its mean, standard error, whether it is beyond twice that, and P(a > b)."""
    d = (a - b).double()
    se = d.std().item() / math.sqrt(len(d))
    return {"mean_a": round(a.mean().item(), 4), "mean_b": round(b.mean().item(), 4),
            "mean_diff": round(d.mean().item(), 4), "std_err": round(se, 4), "std_a": round(a.std().item(), 4),
            "beyond_spread": bool(abs(d.mean().item()) > 2 * se),
            "share_a_more": round((d > 0).double().mean().item(), 4)}


def weights(draw, attrs, words: bool) -> dict:
    """Each weighted prompt (and its unweighted words) against "a seven": ink and thickness, paired by seed."""
    base = draw(BASE)
    out = {}
    for name, prompt in {**WEIGHTED, **({f"{k} (words)": v for k, v in WORDS.items()} if words else {})}.items():
        img = draw(prompt)
        out[name] = {"prompt": prompt, "ink": paired(ink(img), ink(base)),
                     "thickness": paired(attrs(img)["thickness"], attrs(base)["thickness"])}
    return out


def ones(draw) -> dict:
    base = draw(BASE)
    return {p: round((draw(p) == base).double().mean().item(), 6) for p in ONES}


def editing(draw, attrs, judge, whens) -> dict:
    """Judged 7s and distance to the same seed's "a three" in thickness and slant, edited against plain."""
    three, seven = attrs(draw("a three")), draw(BASE)
    rows = {}
    for name, img in [("a seven", seven), *[(EDIT.format(when=w), draw(EDIT.format(when=w))) for w in whens]]:
        a = attrs(img)
        rows[name] = {"judged_7": round(judge(img, 7), 4),
                      **{f"{k}_distance_to_three": round((a[k] - three[k]).abs().mean().item(), 4)
                         for k in ("thickness", "slant")}}
    plain = rows["a seven"]
    for name, r in rows.items():
        r["closer_to_three_than_plain"] = all(r[f"{k}_distance_to_three"] < plain[f"{k}_distance_to_three"]
                                              for k in ("thickness", "slant")) if name != "a seven" else None
        r["goal_met"] = r["closer_to_three_than_plain"] and r["judged_7"] >= 0.8 if name != "a seven" else None
    return rows


def restore_factors(text, captions: list[str], weight: float = 1.5) -> dict:
    """A1111's mean-restoring factor and the root-mean-square one, each real token of each caption weighted."""
    from noisecraft.conditioning.weighting import restore_ratio

    mean_f, rms_f = [], []
    for c in captions:
        row = text([c], "cpu")
        z = row["context"][0, :int(row["context_mask"].sum())]  # (n, D)
        for t in range(1, len(z) - 1):  # the special tokens keep weight 1
            w = torch.ones(len(z), 1)
            w[t] = weight
            mean_f.append((z.sum() / (z * w).sum()).item())
            rms_f.append(restore_ratio(z, z * w).item())
    q = torch.tensor(mean_f).quantile(torch.tensor([0.05, 0.5, 0.95])).tolist()
    return {"captions": len(captions), "tokens_weighted": len(mean_f), "weight": weight,
            "a1111_mean_factor": {"min": round(min(mean_f), 3), "max": round(max(mean_f), 3),
                                  "q05_q50_q95": [round(v, 3) for v in q],
                                  "share_negative": round(sum(v < 0 for v in mean_f) / len(mean_f), 4)},
            "rms_factor": {"min": round(min(rms_f), 3), "max": round(max(rms_f), 3)}}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="runs/digits-text", help="the digits-text run")
    p.add_argument("--n", type=int, default=200, help="images per prompt")
    p.add_argument("--whens", default=",".join(str(w) for w in WHENS), help="prompt editing's switch points")
    p.add_argument("--words", action="store_true", help="also draw the unweighted words, for scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULT_DIR))
    args = p.parse_args(argv)

    from noisecraft.captions import measure_attributes
    from noisecraft.evaluate.classifier import get_classifier
    from noisecraft.pipeline import load_pipeline

    pipe = load_pipeline(args.checkpoint, "cpu")
    clf, opts, cache = get_classifier(pipe.config.data), pipe.resolve(), {}

    def draw(prompt: str) -> torch.Tensor:
        if prompt not in cache:
            t = time.perf_counter()
            cache[prompt] = pipe.generate(args.n, prompt=prompt, seed=args.seed, progress=True)
            print(f"{prompt}: {args.n} images in {time.perf_counter() - t:.0f} s", flush=True)
        return cache[prompt]

    def judge(images: torch.Tensor, digit: int) -> float:
        return clf.accuracy(images, torch.full((len(images),), digit))

    t0 = time.perf_counter()
    result = {"checkpoint": str(pipe.path), "checkpoint_step": pipe.step, "n": args.n, "seed": args.seed,
              "sampler": opts.sampler, "steps": opts.steps, "guidance": opts.guidance,
              "judge_heldout_accuracy": clf.heldout_accuracy,
              "weights": weights(draw, measure_attributes, args.words), "weights_of_one_identical_pixels": ones(draw),
              "editing": editing(draw, measure_attributes, judge, [float(w) for w in args.whens.split(",")]),
              "size_restore": restore_factors(pipe.text, list(pipe.text.rows)[:300])}
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["machine"] = record(opts.precision)
    write_result(result, args.out, "prompt_syntax")
    return result


def render(r: dict) -> str:
    """prompt_syntax.json as markdown: weights against the plain prompt, weights of 1, prompt editing."""
    head = (f"`benchmarks/prompt_syntax.py --n {r['n']}` on the `digits-text` run (step {r['checkpoint_step']}), "
            f"{r['sampler']}, {r['steps']} steps, guidance {r['guidance']:g}, the same {r['n']} seeds for every "
            f"prompt; measured on {describe(r)}, 1 run; `prompt_syntax.json`.")
    lines = [head, "", "| prompt, against \"a seven\" | ink: mean (plain's) | ink difference ± std. error | "
             "beyond its spread | seeds with more ink | thickness difference ± std. error |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in r["weights"].values():
        i, t = row["ink"], row["thickness"]
        lines.append(f"| `{row['prompt']}` | {i['mean_a']:.1f} ({i['mean_b']:.1f}) | {i['mean_diff']:+.2f} ± "
                     f"{i['std_err']:.2f} | {'yes' if i['beyond_spread'] else 'no'} | {100 * i['share_a_more']:.1f}% | "
                     f"{t['mean_diff']:+.3f} ± {t['std_err']:.3f} |")
    same = ", ".join(f"`{p}` {100 * v:.1f}%" for p, v in r["weights_of_one_identical_pixels"].items())
    lines += ["", f"Pixels identical to \"a seven\"'s: {same}.", "",
              "| prompt | judged a 7 | thickness: distance to the seed's \"a three\" | slant: distance to it | "
              "closer than \"a seven\" in both | goal (>= 80% 7s and closer) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, e in r["editing"].items():
        goal = "" if e["goal_met"] is None else "met" if e["goal_met"] else "not met"
        closer = "" if e["closer_to_three_than_plain"] is None else "yes" if e["closer_to_three_than_plain"] else "no"
        lines.append(f"| `{name}` | {100 * e['judged_7']:.1f}% | {e['thickness_distance_to_three']:.3f} | "
                     f"{e['slant_distance_to_three']:.3f} | {closer} | {goal} |")
    s = r["size_restore"]
    m = s["a1111_mean_factor"]
    lines += ["", f"Restoring the size after weighting, over {s['tokens_weighted']} tokens of {s['captions']} "
              f"training captions each weighted {s['weight']:g}: A1111's mean factor spans {m['min']:g} to "
              f"{m['max']:g} (5th-95th percentiles {m['q05_q50_q95'][0]:g} to {m['q05_q50_q95'][2]:g}), negative for "
              f"{100 * m['share_negative']:.1f}% of them; the root-mean-square factor spans "
              f"{s['rms_factor']['min']:g} to {s['rms_factor']['max']:g}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
