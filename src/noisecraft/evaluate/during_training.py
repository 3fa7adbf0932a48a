"""Metrics during training: a small, fast offline evaluation at an interval, and the best checkpoint by a metric.

Every `train.eval_every` steps the trainer draws `train.eval_n` class-balanced samples from the EMA model with
DDIM at `train.eval_steps` steps (fixed seeds, so successive evaluations differ only by the weights) and scores
them with the dataset's classifier (trained and cached on first use). The numbers go to log.jsonl and
metrics.png; with `train.best_metric` set to one of them, `best` is the checkpoint that scores best on it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from noisecraft.registry import BEST_METRICS


@torch.no_grad()
def training_metrics(pipe, n: int | None = None, steps: int | None = None) -> dict:
    """{"fd_clf", "precision", "recall"[, "class_accuracy"], "eval_n", "eval_seconds"} of n fresh samples of a
    pipeline (the trainer's, over its EMA denoiser). A text model draws them from one template prompt per class
    ("a handwritten seven")."""
    import time

    from noisecraft.evaluate.report import classifier_metrics

    t0, cfg = time.perf_counter(), pipe.config
    prompts = template_prompts(pipe, cfg.data.dataset)
    # DDIM at the eval step count with fixed seeds; guidance, clipping and precision are the run's sample config.
    req = pipe.prepare(n or cfg.train.eval_n, prompt=prompts, sampler="ddim", steps=steps or cfg.train.eval_steps,
                       seed=0)  # class-balanced: i % K
    images = pipe.generate(request=req)
    classes = torch.arange(req.n) % len(prompts) if prompts else req.labels  # prompt i names class i
    m = classifier_metrics(images, classes, cfg.data, pipe.device, perfect=False)["generated"]
    out = {"fd_clf": m["fd"], "precision": m["precision"], "recall": m["recall"], "eval_n": req.n}
    if "class_accuracy" in m:
        out["class_accuracy"] = m["class_accuracy"]
    out["eval_seconds"] = time.perf_counter() - t0
    return out


def template_prompts(pipe, dataset: str) -> list[str] | None:
    """What a quick evaluation asks a model that takes prompts: one template prompt per class ("a handwritten
    seven"), prompt i naming class i; None for other models (their samples are class-balanced, i % K)."""
    from noisecraft.evaluate.text import default_prompts

    prompting = pipe.conditioner.evaluation_prompts(
        None, lambda: {"source": "templates", "prompts": default_prompts(pipe.class_names, dataset)})
    return None if prompting is None else prompting["prompts"]


def plot_metric_curves(records: list[dict], out_path: str | Path) -> bool:
    """metrics.png: each training metric of the `eval` records of log.jsonl against step; False when none."""
    if not records:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in BEST_METRICS if BEST_METRICS.get(m).needs_eval and m in records[0]]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8))
    for ax, name in zip(axes if len(names) > 1 else [axes], names):
        ax.plot([r["step"] for r in records], [r[name] for r in records], marker="o", ms=3)
        ax.set_title(name + ("" if BEST_METRICS.get(name).higher_is_better else " (lower is better)"), fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(f"offline metrics ({records[0].get('eval_n', '?')} samples, classifier judge)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return True
