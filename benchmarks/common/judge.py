"""Judging a trained run the way the presets' goals are stated: class-conditional samples read by the offline
digits classifier, an autoencoder's reconstructions, and a text model's held-out paraphrases and attribute pairs."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from common.results import json_from_child

DIGITS = """
import json, sys, time
from noisecraft.evaluate.classifier import classifier_accuracy
from noisecraft.pipeline import load_pipeline
run, n = sys.argv[1], int(sys.argv[2])
pipe = load_pipeline(run, "cpu")
n, labels = pipe.request(n)
out = {}
for key, sampler, steps in (("ddim50", "ddim", 50), ("dpmpp10", "dpmpp-2m", 10)):
    t0 = time.perf_counter()
    images = pipe.generate(n, labels=labels, sampler=sampler, steps=steps, seed=10_000, precision="fp32")
    out[f"{key}_accuracy"] = round(float(classifier_accuracy(images, labels, dataset="digits")), 4)
    out[f"{key}_sampling_s"] = round(time.perf_counter() - t0, 1)
print(json.dumps(out))
"""


def judge_digits(run: str, n: int, env: dict | None = None) -> dict:
    """`n` class-balanced samples at DDIM-50 and DPM-Solver++(2M) 10 steps (the run's guidance), in fp32, judged by
    the offline digits classifier; sampled in a child process with `env` (default: this one's), so that the judge
    runs under the same kernel cap as the training it judges."""
    return json_from_child(DIGITS, run, n, env=env)


def judge_autoencoder(run: str, env: dict | None = None) -> dict:
    """`noisecraft evaluate-autoencoder` of the run (with `env`): PSNR, SSIM and the offline judge's figures on the
    reconstructions."""
    subprocess.run([sys.executable, "-m", "noisecraft", "evaluate-autoencoder", "--checkpoint", run, "--device", "cpu"],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = json.loads((Path(run) / "eval-autoencoder" / "report.json").read_text())
    return {"psnr_db": round(r["psnr_db"], 2), "ssim": round(r["ssim"], 4),
            "judge_accuracy": round(r["judge"]["accuracy"], 4),
            "originals_judge_accuracy": round(r["judge"]["originals_accuracy"], 4),
            "fd_clf": round(r["judge"]["fd_clf"], 2), "latent_scale": r["latent_scale"]}


# ---------------------------------------------------------------- text: held-out paraphrases, attribute pairs

HELD_OUT = ("a sketch of the numeral {}", "{}, written by hand", "the handwritten number {} on paper",
            "someone wrote a {}", "here is the digit {} in ink", "a scribbled {}", "an example of a handwritten {}",
            "the figure {}", "a black and white picture of a {}", "{} drawn with a pen")
PAIRS = {"thickness": ("a bold {}", "a thin {}"), "slant": ("a {} leaning right", "a {} leaning left"),
         "size": ("a large {}", "a small {}")}  # (higher, lower) measured value asked for


def held_out_prompts() -> list[str]:
    """Each held-out wording with each digit as a word and as a numeral, checked against every training caption."""
    from noisecraft.captions import DIGIT_WORDS
    from noisecraft.config import DataConfig
    from noisecraft.data import load_dataset

    prompts = [t.format(name) for t in HELD_OUT for d in range(10) for name in (DIGIT_WORDS[d], str(d))]
    training = set(load_dataset(DataConfig(captions="on"), "train").captions.texts)
    assert not training & set(prompts), "a held-out prompt is a training caption"
    return prompts


def paraphrase_accuracy(pipe, opts, n: int) -> dict:
    """`n` samples of held-out paraphrases, judged as the digit they ask for (overall and by wording)."""
    import torch

    from noisecraft.captions import parse_prompt
    from noisecraft.evaluate.classifier import classifier_accuracy

    prompts = held_out_prompts()
    asked = [prompts[i % len(prompts)] for i in range(n)]
    labels = torch.tensor([parse_prompt(p, pipe.class_names, digits=True)[0] for p in asked])
    t0 = time.perf_counter()
    images = pipe.generate(n, prompt=asked, options=opts, progress=True)
    acc = classifier_accuracy(images, labels, dataset="digits")
    per = {t: round(classifier_accuracy(images[idx], labels[idx], dataset="digits"), 3)
           for t, idx in _by_template(asked).items()}
    return {"n": n, "prompts": len(prompts), "templates": list(HELD_OUT), "accuracy": round(acc, 4),
            "accuracy_by_template": per, "sampling_seconds": round(time.perf_counter() - t0, 1)}


def _by_template(asked: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, p in enumerate(asked):
        t = next(t for t in HELD_OUT if p.startswith(t.split("{}")[0]) and p.endswith(t.split("{}")[1]))
        out.setdefault(t, []).append(i)
    return out


def attribute_pairs(pipe, opts, seeds: int) -> dict:
    """For each attribute, digits 0-9 x `seeds` seeds: both prompts of a pair at the same seed."""
    import torch

    from noisecraft.captions import DIGIT_WORDS, measure_attributes

    out, agree_all, t0 = {}, [], time.perf_counter()
    for attribute, (high, low) in PAIRS.items():
        words = [DIGIT_WORDS[d] for d in range(10) for _ in range(seeds)]
        # image i of each side is seeded seed + i: the pair shares its noise
        hi = measure_attributes(pipe.generate(len(words), prompt=[high.format(w) for w in words], options=opts))
        lo = measure_attributes(pipe.generate(len(words), prompt=[low.format(w) for w in words], options=opts))
        agree = hi[attribute] > lo[attribute]
        agree_all.append(agree)
        out[attribute] = {"pair": [high, low], "pairs": len(words), "agreement": round(agree.float().mean().item(), 4),
                          "median_difference": round((hi[attribute] - lo[attribute]).median().item(), 4)}
    out["overall"] = round(torch.cat(agree_all).float().mean().item(), 4)
    out["sampling_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def judge_text(run: str, n: int, pair_seeds: int) -> dict:
    """A text run's held-out paraphrases (`n` samples) and attribute pairs (`pair_seeds` seeds), in fp32."""
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


def evaluate_cli(run: str, n: int, flags=(), env: dict | None = None, out: str | Path | None = None) -> dict:
    """`noisecraft evaluate --checkpoint RUN --n N --device cpu FLAGS [--out OUT]` as a user runs it, in a child
    with `env` (default: this one's), its output dropped; the report.json it writes (in OUT, or RUN/eval)."""
    cmd = [sys.executable, "-m", "noisecraft", "evaluate", "--checkpoint", str(run), "--n", str(n), "--device", "cpu",
           *flags, *(["--out", str(out)] if out else [])]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(['noisecraft', *cmd[3:]])} failed:\n{done.stderr[-3000:]}")
    return json.loads((Path(out or Path(run) / "eval") / "report.json").read_text())
