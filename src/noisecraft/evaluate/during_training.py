"""Metrics during training: a small, fast offline evaluation at an interval, and the best checkpoint by a metric.

Every `train.eval_every` steps the trainer draws `train.eval_n` class-balanced samples from the EMA model with
DDIM at `train.eval_steps` steps (fixed seeds, so successive evaluations differ only by the weights) and scores
them with the dataset's classifier (trained and cached on first use). The numbers go to log.jsonl and
metrics.png; with `train.best_metric` set to one of them, `best` is the checkpoint that scores best on it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from noisecraft.config import Config

# metric name -> True when higher is better
BEST_METRICS = {"val_loss": False, "fd_clf": False, "class_accuracy": True, "precision": True, "recall": True}


def is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value > best if BEST_METRICS[metric] else value < best


@torch.no_grad()
def training_metrics(denoiser, cfg: Config, device, n: int | None = None, steps: int | None = None) -> dict:
    """{"fd_clf", "precision", "recall"[, "class_accuracy"], "eval_n", "eval_seconds"} of n fresh samples."""
    import time

    from noisecraft.conditioning import sample_labels
    from noisecraft.evaluate.report import classifier_metrics
    from noisecraft.generate import generate

    t0 = time.perf_counter()
    n = n or cfg.train.eval_n
    k = cfg.model.num_classes
    labels = sample_labels(n, k)
    images = generate(denoiser, n=n, labels=labels, num_classes=k,
                      shape=(cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size),
                      sampler="ddim", steps=steps or cfg.train.eval_steps, guidance=cfg.sample.guidance,
                      guidance_interval=cfg.sample.guidance_interval, seed=0,
                      clip_x0=cfg.sample.clip_x0, device=device, precision=cfg.sample.precision)
    m = classifier_metrics(images, labels, cfg.data, device, perfect=False)["generated"]
    out = {"fd_clf": m["fd"], "precision": m["precision"], "recall": m["recall"], "eval_n": n}
    if "class_accuracy" in m:
        out["class_accuracy"] = m["class_accuracy"]
    out["eval_seconds"] = time.perf_counter() - t0
    return out


def eval_step(denoiser, cfg: Config, device, step: int, log, run_dir: str | Path, extra: dict) -> bool:
    """One evaluation inside the training loop: log the metrics, redraw metrics.png, and return True when this
    step is the new best by `train.best_metric` (its value is kept in `extra["best_score"]`, which the trainer
    stores in every checkpoint so a resumed run keeps comparing against it)."""
    from noisecraft.errors import UserError

    scores = training_metrics(denoiser, cfg, device)
    log.write(json.dumps({"step": step, **scores}) + "\n")
    log.flush()
    plot_metric_curves(Path(run_dir) / "log.jsonl", Path(run_dir) / "metrics.png")
    metric = cfg.train.best_metric
    if metric == "val_loss":
        return False
    if metric not in scores:
        raise UserError(f"train.best_metric={metric} is not available for this model (unconditional: no class "
                        f"accuracy); use fd_clf, precision or recall")
    if is_better(metric, scores[metric], extra.get("best_score")):
        extra["best_score"] = scores[metric]
        return True
    return False


def plot_metric_curves(log_path: str | Path, out_path: str | Path) -> bool:
    """metrics.png: each logged training metric against step; False when the log holds none."""
    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    records = [r for r in records if "fd_clf" in r]
    if not records:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in ("class_accuracy", "fd_clf", "precision", "recall") if m in records[0]]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8))
    for ax, name in zip(axes if len(names) > 1 else [axes], names):
        ax.plot([r["step"] for r in records], [r[name] for r in records], marker="o", ms=3)
        ax.set_title(name + (" (lower is better)" if not BEST_METRICS[name] else ""), fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(f"offline metrics ({records[0].get('eval_n', '?')} samples, classifier judge)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return True
