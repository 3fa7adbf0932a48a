"""A distilled student against its teacher, side by side in one run: the same N class-balanced labels and seeds
drawn at 1, 2, 4 and 15 steps by each (the teacher with its own sampler and guidance, the student with consistency
sampling, unguided), judged by the offline classifier (accuracy, Fréchet distance in its features), with network
calls counted at the network and images/s; then `noisecraft evaluate --n 2000` of each, whose report states the
sampling time.

    noisecraft distill --checkpoint runs/digits --out runs/digits-cd
    python benchmarks/fewstep.py --teacher runs/digits --student runs/digits-cd
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from common.judge import evaluate_cli, paraphrase_accuracy
from common.machine import describe, record
from common.results import write_result

STEPS = (1, 2, 4, 15)


def _draw(pipe, labels, steps: int, seed: int, **options) -> tuple[torch.Tensor, float, float]:
    """uint8 images, wall seconds, and network calls per image (rows through the network / images)."""
    rows = [0]
    hook = pipe.denoiser.net.register_forward_hook(lambda m, a, out: rows.__setitem__(0, rows[0] + out.shape[0]))
    try:
        t0 = time.perf_counter()
        images = pipe.generate(labels=labels, steps=steps, seed=seed, **options)
        wall = time.perf_counter() - t0
    finally:
        hook.remove()
    return images, wall, rows[0] / len(labels)


def _evaluate(run: str, n: int, out: Path, env: dict | None) -> dict:
    """`noisecraft evaluate --n N` as a user runs it; its report's timing and judge accuracy."""
    report = evaluate_cli(run, n, env=env, out=out)
    return {"sampling_s": report["timing"]["sampling_s"], "samples_per_s": report["timing"]["samples_per_s"],
            "sampler": report["sampling"]["sampler"], "steps": report["sampling"]["steps"],
            "report_md_states": f"Sampling took {report['timing']['sampling_s']} s",
            "machine": record(report["sampling"].get("precision", "auto"), env)}


def _paraphrases(teacher_run: str, student_run: str, n: int) -> dict:
    """Held-out paraphrase prompts (common.judge's, as text_to_image.py), judged: the teacher at its default, the
    student at 1 and 2 steps."""
    from noisecraft.pipeline import load_pipeline

    teacher, student = load_pipeline(teacher_run, "cpu"), load_pipeline(student_run, "cpu")
    rows = []
    for who, pipe, steps in (("teacher", teacher, None), ("student", student, 1), ("student", student, 2)):
        opts = pipe.resolve(steps=steps, seed=10_000)
        r = paraphrase_accuracy(pipe, opts, n)
        rows.append({"model": who, "sampler": opts.sampler, "steps": opts.steps, "accuracy": r["accuracy"],
                     "n": r["n"], "prompts": r["prompts"], "sampling_s": r["sampling_seconds"]})
        print(f"paraphrases: {who} {opts.sampler} {opts.steps} steps: {r['accuracy']:.4f}", flush=True)
    return {"teacher": teacher_run, "student": student_run, "student_steps_trained": student.step, "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", default="runs/digits")
    p.add_argument("--student", default="runs/digits-cd")
    p.add_argument("--n", type=int, default=1000, help="class-balanced samples per row")
    p.add_argument("--evaluate-n", type=int, default=2000, help="0: skip the evaluate comparison")
    p.add_argument("--text-teacher", help="a digits-text run: judge its held-out paraphrase prompts too")
    p.add_argument("--text-student", help="its distilled student")
    p.add_argument("--text-n", type=int, default=600, help="paraphrase samples per row")
    p.add_argument("--keep-text", action="store_true", help="keep the text rows of the file this run replaces "
                   "(marked as measured in an earlier run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="fewstep")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)

    from noisecraft.evaluate.classifier import get_classifier, reference_features
    from noisecraft.evaluate.frechet import frechet_distance_stats, gaussian_stats
    from noisecraft.pipeline import load_pipeline

    teacher, student = load_pipeline(args.teacher, "cpu"), load_pipeline(args.student, "cpu")
    clf = get_classifier(teacher.config.data)
    real = gaussian_stats(reference_features(clf, teacher.config.data)["train_features"])
    _, labels = teacher.request(args.n)  # class-balanced
    t_opts = teacher.resolve()
    result = {"teacher": str(teacher.path), "student": str(student.path), "student_steps_trained":
              student.step, "n": args.n, "seed": args.seed, "machine": record("auto"),
              "teacher_prediction": teacher.config.diffusion.prediction, "teacher_sampler": t_opts.sampler,
              "teacher_guidance": t_opts.guidance,
              "teacher_guidance_interval": list(t_opts.guidance_interval), "rows": []}
    for who, pipe, options in (("teacher", teacher, {}), ("student", student, {"sampler": "consistency"})):
        for steps in STEPS:
            images, wall, calls = _draw(pipe, labels, steps, args.seed, **options)
            row = {"model": who, "sampler": pipe.resolve(**options).sampler, "steps": steps,
                   "network_calls_per_image": round(calls, 3), "wall_s": round(wall, 3),
                   "images_per_s": round(args.n / wall, 2), "accuracy": round(clf.accuracy(images, labels), 4),
                   "frechet": round(frechet_distance_stats(gaussian_stats(clf.features(images)), real), 3)}
            print(f"{who:8s} {row['sampler']:12s} {steps:3d} steps {calls:5.1f} calls/image  acc "
                  f"{row['accuracy']:.4f}  FD {row['frechet']:.3f}  {row['images_per_s']:8.1f} img/s", flush=True)
            result["rows"].append(row)
    if args.text_teacher and args.text_student:
        result["text"] = _paraphrases(args.text_teacher, args.text_student, args.text_n)
    elif args.keep_text and (Path(args.out) / f"{args.name}.json").is_file():
        earlier = json.loads((Path(args.out) / f"{args.name}.json").read_text())
        if "text" in earlier:
            result["text"] = {**earlier["text"], "earlier_run": True, "machine": earlier["machine"],
                              "threads": earlier.get("threads")}
    if args.evaluate_n:
        with tempfile.TemporaryDirectory() as tmp:
            result["evaluate"] = {who: _evaluate(run, args.evaluate_n, Path(tmp) / who, None)
                                  for who, run in (("teacher", args.teacher), ("student", args.student))}
        e = result["evaluate"]
        e["sampling_time_ratio"] = round(e["teacher"]["sampling_s"] / e["student"]["sampling_s"], 2)
        print(f"evaluate --n {args.evaluate_n}: teacher {e['teacher']['sampling_s']} s, student "
              f"{e['student']['sampling_s']} s ({e['sampling_time_ratio']}x)", flush=True)
    write_result(result, args.out, args.name)
    return result


def _evaluate_machine(r: dict) -> str:
    """Where the evaluate comparison ran: recorded by each child since issue 36; before, the children were started
    with the script's own environment (env=None), so on the machine the file records, at evaluate's default
    precision."""
    e = r["evaluate"]
    if "machine" in e["teacher"]:
        return (f"both measured on {describe({'machine': e['teacher']['machine']}, e['teacher'].get('precision'))}, "
                "1 run")
    return (f"both in the same run of the script, its `evaluate` children started with its environment: on "
            f"{describe(r, precision='auto')}, 1 run")


def render(r: dict) -> str:
    """fewstep.json as markdown: one row per model and step count, with the machine."""
    objective = {"flow": " (rectified flow)", "v": " (v-prediction)"}.get(r.get("teacher_prediction", "v"), "")
    head = (f"`benchmarks/fewstep.py --n {r['n']}`: the `digits` run{objective} and its student distilled for "
            f"{r['student_steps_trained']} steps, the same class-balanced labels and seeds for every row, measured "
            f"on {describe(r, precision='auto')}, 1 run; `fewstep.json`.")
    lines = [head, "", "| what | sampler | steps | network calls an image | judged as the digit asked | FD-clf | "
             "images/s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in r["rows"]:
        lines.append(f"| {row['model']} | `{row['sampler']}` | {row['steps']} | {row['network_calls_per_image']:g} | "
                     f"{100 * row['accuracy']:.1f}% | {row['frechet']:.2f} | {row['images_per_s']:.1f} |")
    t = r.get("text")
    if t:
        earlier = (f" (an earlier run of the script, on {describe(t, precision='auto')})" if t.get("earlier_run")
                   else "")
        lines += ["", f"Text: the `digits-text` run and its student ({t['student_steps_trained']} steps), "
                  f"{t['rows'][0]['n']} samples of {t['rows'][0]['prompts']} held-out paraphrase prompts "
                  f"each{earlier}:", "",
                  "| what | sampler | steps | judged as the digit named |", "| --- | --- | --- | --- |"]
        lines += [f"| {row['model']} | `{row['sampler']}` | {row['steps']} | {100 * row['accuracy']:.1f}% |"
                  for row in t["rows"]]
    e = r.get("evaluate")
    if e:
        lines += ["", f"`noisecraft evaluate --n 2000`, sampling time as report.md states it: teacher "
                  f"({e['teacher']['sampler']} {e['teacher']['steps']}) {e['teacher']['sampling_s']:.1f} s, student "
                  f"({e['student']['sampler']} {e['student']['steps']}) {e['student']['sampling_s']:.1f} s: "
                  f"{e['sampling_time_ratio']:.1f}x shorter, " + _evaluate_machine(r) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
