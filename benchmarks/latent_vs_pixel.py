"""Pixel vs latent diffusion on the 64x64 digits, side by side: `digits64` against `digits64-latent` and
`digits64-text-latent` (in the latents of a trained digits64-ae run).

Each trains in a subprocess for the same wall-clock budget (stopped by SIGTERM, which saves `last`; the latent
run's budget includes encoding its latent cache), then draws N class-balanced DDIM-50 samples (the presets'
guidance; the latent runs' time includes decoding) judged by the offline digits classifier at its native size; the
text run draws them from one template prompt per digit ("a handwritten seven"), judged as the digit named.
Records training images/s, sampling images/s and judge accuracy, with the CPU and its threads, and the
autoencoder run's own training seconds (its summary.json), so that the table reports the latent runs' budget both
ways: without the autoencoder's training, and with it.

    python benchmarks/latent_vs_pixel.py --autoencoder runs/ae64 --budget 180 --n 200
"""
from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common.machine import describe, record
from common.results import write_result

NO_CADENCE = ["--train.val_every=1000000", "--train.sample_every=1000000", "--train.ckpt_every=1000000",
              "--train.final_figures=false", "--steps", "1000000"]


def train_for(name: str, preset: str, extra: list[str], args) -> dict:
    """Train `preset` for args.budget seconds of wall clock; the run's training images/s from its log."""
    run = Path(args.work) / name
    if args.reuse:  # judge the runs a previous call trained
        return {"run": str(run), "wall_s": None, **_log_figures(run)}
    cmd = [sys.executable, "-m", "noisecraft", "train", "--preset", preset, "--out", str(run), "--overwrite",
           "--no-progress", *NO_CADENCE, *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        proc.wait(timeout=args.budget)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # finishes the step, saves checkpoints/last
        proc.wait()
    return {"run": str(run), "wall_s": round(time.perf_counter() - t0, 1), **_log_figures(run)}


def _log_figures(run: Path) -> dict:
    """Steps trained and the median training images/s of the log's records (the first, which includes the
    start-up, only when it is the only one)."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    rates = [r["img_per_s"] for r in records if r.get("kind") == "train" and "img_per_s" in r]
    steps = max(r["step"] for r in records if r.get("kind") == "train")
    return {"steps": steps, "train_img_per_s": round(statistics.median(rates[1:] or rates), 1)}


def sample_and_judge(run: str, n: int) -> dict:
    import torch

    from noisecraft.evaluate.classifier import classifier_accuracy
    from noisecraft.evaluate.during_training import template_prompts
    from noisecraft.pipeline import load_pipeline

    pipe = load_pipeline(run, "cpu", prefer="last")
    prompts = template_prompts(pipe, "digits")
    req = pipe.prepare(n, prompt=prompts, sampler="ddim", steps=50, seed=10_000)  # class-balanced: i % 10
    labels = torch.arange(req.n) % 10 if prompts else req.labels
    pipe.generate(2, labels=req.labels[:2], steps=2)  # warm-up: first-call allocations (and the prompts' embeddings)
    t0 = time.perf_counter()
    images = pipe.generate(request=req)
    seconds = time.perf_counter() - t0
    return {"sample_img_per_s": round(n / seconds, 2), "sampling_s": round(seconds, 1), "n": n,
            "image_shape": list(images.shape[1:]), "threads": torch.get_num_threads(),
            "judge_accuracy": round(float(classifier_accuracy(images, labels, dataset="digits")), 4)}


ROWS = (("pixel", "digits64"), ("latent", "digits64-latent"), ("text_latent", "digits64-text-latent"))


def render(result: dict, presets: dict | None = None) -> str:
    """latent_vs_pixel.json as a markdown table (the docs' benchmarks page renders it when the site is built), the
    latent runs' budget counted both ways: without their autoencoder's training, and with it, from the autoencoder
    run's own record in `presets` (laptop_presets.json) when it is that run."""
    b = result["budget_s"]
    head = [(f"`benchmarks/latent_vs_pixel.py --budget {b:g}` (`latent_vs_pixel.json`, one run) on "
            f"{describe(result, precision='auto (bf16 here)')}: each preset trained for the same {b:g} s of wall "
            f"clock, then {result['pixel']['n']} DDIM-50 samples judged (the text run's from one template prompt per "
            f"digit):"), "",
            "| what | " + " | ".join(f"`{preset}`" for _, preset in ROWS) + " |", "| --- |" + " --- |" * len(ROWS)]

    def row(label, key, fmt, speedup=None):
        cells = []
        for name, _ in ROWS:
            r = result[name]
            x = result.get(f"{name}_speedup", {}).get(speedup) if speedup else None
            cells.append(fmt(r[key]) + (f" ({x:g}x)" if x else ""))
        return f"| {label} | " + " | ".join(cells) + " |"

    lines = head + [row("training images/s", "train_img_per_s", "{:g}".format, "train"),
                    row("sampling images/s, DDIM 50 (decoding included)", "sample_img_per_s", "{:g}".format,
                        "sampling"),
                    row(f"steps reached in {b:g} s", "steps", str),
                    row("samples judged as the digit asked for", "judge_accuracy", lambda v: f"{100 * v:.1f}%")]
    ae = next((r for r in (presets or {}).get("rows", []) if r["preset"] == "digits64-ae"
               and f"--out {result['autoencoder']} " in r["command"] + " "), None)
    if ae is None and "autoencoder_train_loop_s" in result:  # recorded by the run itself, in its conditions
        ae_s = result["autoencoder_train_loop_s"]
        lines.append(f"| training seconds, the autoencoder's training loop included | {b:g} | " + " | ".join(
            [f"{b:g} + {ae_s:g} = {b + ae_s:g}"] * (len(ROWS) - 1)) + " |")
    elif ae is None:
        lines.append(f"| training seconds, the autoencoder's included | {b:g} | not recorded | not recorded |")
    else:
        ae_s = ae["wall_s"]
        lines.append(f"| training seconds, the autoencoder's included | {b:g} | " + " | ".join(
            [f"{b:g} + {ae_s:g} = {b + ae_s:g}"] * (len(ROWS) - 1)) + " |")
        lines += ["", (f"The two latent runs trained in the latents of the `digits64-ae` run of `laptop_presets.json`, "
                  f"whose `train-autoencoder` command took {ae_s:g} s there (kernels capped to "
                  f"{ae['machine'].get('kernels_capped_to')}, fp32: not the conditions of this table, where it "
                  f"would have been faster). Counted in their budget, the latent runs had "
                  f"{(b + ae_s) / b:.1f}x the pixel run's training seconds; one autoencoder serves any number of "
                  f"latent runs.")]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--autoencoder", required=True, help="a digits64-ae run directory")
    ap.add_argument("--budget", type=float, default=180.0, help="training wall-clock seconds for each model")
    ap.add_argument("--n", type=int, default=200, help="samples judged per model")
    ap.add_argument("--work", default="runs/latent_vs_pixel")
    ap.add_argument("--reuse", action="store_true", help="judge the runs in --work that a previous call trained")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    result = {"benchmark": "latent_vs_pixel", "budget_s": args.budget, "machine": record("auto"),
              "autoencoder": args.autoencoder}
    summary = Path(args.autoencoder) / "summary.json"
    if summary.is_file():  # the autoencoder's own training time, for the budget counted with it (see render)
        result["autoencoder_train_loop_s"] = round(json.loads(summary.read_text())["train_seconds"], 1)
    ae = ["--autoencoder", args.autoencoder]
    for name, preset, extra in (("pixel", "digits64", []), ("latent", "digits64-latent", ae),
                                ("text_latent", "digits64-text-latent", ae)):
        result[name] = {"preset": preset, **train_for(name, preset, extra, args)}
        result[name].update(sample_and_judge(result[name]["run"], args.n))
    p = result["pixel"]
    for name in ("latent", "text_latent"):
        q = result[name]
        result[f"{name}_speedup"] = {"train": round(q["train_img_per_s"] / p["train_img_per_s"], 2),
                                     "sampling": round(q["sample_img_per_s"] / p["sample_img_per_s"], 2)}
    write_result(result, args.out, "latent_vs_pixel")


if __name__ == "__main__":
    main()
