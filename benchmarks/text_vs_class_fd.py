"""Like with like (issue 38): a text run's FD against the held-out images whose captions it was asked for, as a
factor of its floor, beside the class run of the same data's FD against its training reference as a factor of its
floor. The goal: the text run within the same factor as the class run (no penalty for how it is asked).

    python benchmarks/text_vs_class_fd.py --text runs/digits-text --class runs/digits --n 1000
    python benchmarks/text_vs_class_fd.py --text T0 T1 T2 --class C0 C1 C2 --text-sample guidance=1.5   # 3 seeds

Each run goes through `noisecraft evaluate` (the library call, Inception off) with the checkpoint's own sampler: the
class run class-balanced against `offline.floors`, the text run on held-out captions against
`offline.floors_captions` (and `offline.floors`, for the record). The text run is also evaluated the old way, one
template prompt per class (`--prompts` of `text.default_prompts`), to show what that protocol scored. A factor is
the samples' FD at the floors' n over the floor's FD: "heldout" is the real held-out images, "train" the training
images outside the reference. FD's bias grows as n falls, so the goal compares the two factors at one n (the text
run's captions' floor n; the class run's first samples, floors cut alike). Runs of several seeds (one text and one
class run each) compare by their means, with the spread. Sampling and metrics are deterministic (seeded); the wall
times are not, and are void on a shared machine.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common.machine import record
from common.results import write_result


def factors(floors: dict) -> dict:
    """FD of the samples at the floors' n, of the two floors, and the samples' over each floor."""
    gen = floors.get("generated_at_floor_n", floors["generated"])
    held, train = floors["real_heldout"]["fd"], floors["real_train_unseen"]["fd"]
    return {"reference": floors["reference"], "n": gen["n"], "fd": gen["fd"],
            "fd_all_samples": floors["generated"]["fd"], "samples_n": floors["generated"]["n"], "floor_heldout_fd": held, "floor_train_fd": train,
            "factor_heldout": gen["fd"] / held, "factor_train": gen["fd"] / train,
            "precision": gen["precision"], "recall": gen["recall"],
            "floor_heldout_precision_recall": [floors["real_heldout"]["precision"], floors["real_heldout"]["recall"]]}


def at_n(run: str, samples: Path, n: int) -> dict:
    """The class run's figures against its training reference with only its first `n` samples (floors cut to n
    too): FD's bias grows as n falls, so the text run's factor (at its captions' floor n) compares with this one."""
    import numpy as np
    import torch

    from noisecraft.evaluate.classifier import get_classifier, reference_features
    from noisecraft.evaluate.report import floor_metrics
    from noisecraft.pipeline import load_pipeline

    data = load_pipeline(run, "cpu").config.data
    clf = get_classifier(data)
    images = torch.from_numpy(np.load(samples)["images"][:n])
    return factors(floor_metrics(clf.features(images), reference_features(clf, data)))


def evaluate(run: str, n: int, out: Path, prompts: list[str] | None = None, reuse: bool = False,
             sampling: dict | None = None) -> tuple[dict, float]:
    """`noisecraft evaluate`'s report of `run` written to `out`, and its wall time; `sampling`: SamplingOptions
    fields instead of the checkpoint's; with `reuse`, a report already in `out` is read when it is of the same run
    and n and sampled as `sampling` asks (of the settings a report records)."""
    import json

    from noisecraft.evaluate.report import EvalOptions, evaluate_checkpoint
    from noisecraft.pipeline import SamplingOptions

    if reuse and (out / "report.json").is_file():
        report = json.loads((out / "report.json").read_text())
        ckpt, asked = Path(report["checkpoint"]).resolve(), Path(run).resolve()
        same = all(report["sampling"].get(k, v) == v for k, v in (sampling or {}).items())
        if report["sampling"]["n"] == n and same and (ckpt == asked or asked in ckpt.parents):
            return report, report["timing"]["total_s"]
    t0 = time.perf_counter()
    options = EvalOptions(n=n, inception=False, progress=False, prompts=prompts,
                          sampling=SamplingOptions(**(sampling or {})))
    report = evaluate_checkpoint(run, out, options)
    return report, time.perf_counter() - t0


SAMPLING_KEYS = ("guidance", "guidance_interval", "steps", "sampler")  # the settings --text-sample takes


def sampling_overrides(pairs: list[str]) -> dict:
    """["guidance=1.5", "guidance_interval=1,inf"] as SamplingOptions fields, parsed and checked as the config's
    `sample` section parses and checks them."""
    from noisecraft.config import Config, apply_overrides

    values = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in SAMPLING_KEYS:
            raise SystemExit(f"error: --text-sample takes {', '.join(SAMPLING_KEYS)}, got {key!r}")
        values[key] = value
    sample = apply_overrides(Config(), {f"sample.{k}": v for k, v in values.items()}).sample
    return {k: getattr(sample, k) for k in values}


def compare(text_run: str, class_run: str, args, work: Path, sampling: dict) -> dict:
    """One text run and one class run (a seed each) through `noisecraft evaluate`, factors at the same n; the text
    run sampled with `sampling` (SamplingOptions fields) instead of its checkpoint's settings."""
    from noisecraft.evaluate.text import default_prompts
    from noisecraft.pipeline import load_pipeline

    cls, t_cls = evaluate(class_run, args.n, work / "class", reuse=args.reuse)
    txt, t_txt = evaluate(text_run, args.n, work / "text", reuse=args.reuse, sampling=sampling)
    result = {"runs": {"text": text_run, "class": class_run}, "text_sampling_overrides": sampling}
    result["class"] = {"step": cls["step"], "sampling": cls["sampling"], "wall_s": round(t_cls, 1),
                       "class_accuracy": cls["offline"]["generated"]["class_accuracy"],
                       "against_training": factors(cls["offline"]["floors"])}
    result["text"] = {"step": txt["step"], "sampling": txt["sampling"], "wall_s": round(t_txt, 1),
                      "against_captions_images": factors(txt["offline"]["floors_captions"]),
                      "against_training": factors(txt["offline"]["floors"]),
                      "alignment": {k: v for k, v in txt["text"].items() if k != "real_heldout"},
                      "alignment_real_images": txt["text"]["real_heldout"]}
    if not args.no_templates:
        pipe = load_pipeline(text_run, "cpu")
        prompts = default_prompts(pipe.class_names, pipe.config.data.dataset)
        old, t_old = evaluate(text_run, args.n, work / "templates", prompts, reuse=args.reuse, sampling=sampling)
        result["text_one_template_per_class"] = {
            "prompts": prompts, "wall_s": round(t_old, 1), "against_training": factors(old["offline"]["floors"])}
    n_text = result["text"]["against_captions_images"]["n"]
    result["class"]["against_training_at_text_n"] = at_n(class_run, work / "class" / "samples.npz", n_text)
    return result


def spread(values: list[float]) -> dict:
    return {"each": values, "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--text", required=True, nargs="+", help="text runs (directories or checkpoints), one per seed")
    p.add_argument("--class", dest="class_run", required=True, nargs="+",
                   help="the class runs of the same data, one per seed, paired with --text in order")
    p.add_argument("--text-sample", action="append", default=[], metavar="KEY=VALUE",
                   help="a sampling setting for the text runs instead of their checkpoint's (guidance, "
                        "guidance_interval, steps, sampler), recorded in the result")
    p.add_argument("--n", type=int, default=1000, help="samples per evaluation")
    p.add_argument("--no-templates", action="store_true", help="skip the text run's one-template-per-class row")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", default="text_vs_class_fd", help="result file name (without .json)")
    p.add_argument("--work", help="keep the reports here (seedK/class, text, templates; default: a temporary folder)")
    p.add_argument("--reuse", action="store_true", help="read reports already in --work instead of evaluating again")
    args = p.parse_args(argv)
    if len(args.text) != len(args.class_run):
        p.error(f"--text names {len(args.text)} runs and --class {len(args.class_run)}: one of each per seed")

    result, sampling = {"machine": record(), "n": args.n}, sampling_overrides(args.text_sample)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        result["seeds"] = [compare(t, c, args, work / f"seed{i}", sampling)
                           for i, (t, c) in enumerate(zip(args.text, args.class_run))]
    text = spread([r["text"]["against_captions_images"]["factor_heldout"] for r in result["seeds"]])
    cls = spread([r["class"]["against_training_at_text_n"]["factor_heldout"] for r in result["seeds"]])
    result["goal"] = {"text_factor_heldout": text, "class_factor_heldout": cls,
                      "n": result["seeds"][0]["text"]["against_captions_images"]["n"],
                      "class_factor_heldout_at_its_floor_n": spread(
                          [r["class"]["against_training"]["factor_heldout"] for r in result["seeds"]]),
                      "met": text["mean"] <= cls["mean"],
                      "rule": "over the seeds, at the same n, the text runs' mean FD against their held-out captions' "
                              "images over their held-out floor <= the class runs' mean FD against their training "
                              "reference over their held-out floor"}
    write_result(result, args.out, args.name)
    return result


if __name__ == "__main__":
    main()
