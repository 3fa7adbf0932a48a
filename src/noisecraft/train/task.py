"""What a training task is, and the pieces every task's step uses (EMA, a guarded optimizer step).

The loop (`train.loop`) owns what every run shares; a task owns what differs: it builds its modules and
optimizers from the config, takes one step on a batch, measures its validation loss and draws its pictures.
The loop never names a network: it saves `task.modules()` and `task.optimizers()` by name, logs whatever losses
`task.step` returns, and calls the hooks at the config's cadence.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from noisecraft import faults
from noisecraft.checkpoint import Checkpoint
from noisecraft.config import Config
from noisecraft.distributed import DistInfo
from noisecraft.phema import ema_decay_at, ema_update
from noisecraft.registry import TRAINING_HOOKS


def _registered(name: str) -> Callable:
    return lambda *args, **kwargs: TRAINING_HOOKS.load(name)(*args, **kwargs)  # imported at the first call


@dataclass
class Hooks:
    """What training asks of the rest of noisecraft: figures and metrics of the model being trained. Whoever
    starts training may give its own; the defaults are `registry.TRAINING_HOOKS`, loaded when first called."""

    figure: Callable[..., dict] = field(default_factory=lambda: _registered("figure"))  # (pipe, name, path, **opts)
    metrics: Callable[..., dict] = field(default_factory=lambda: _registered("metrics"))  # (pipe) -> scores
    plot_metrics: Callable[..., Any] = field(default_factory=lambda: _registered("plot_metrics"))  # (records, path)


@dataclass
class TaskContext:
    """What the loop gives a task: where it runs, and how to wrap a module for the training step."""

    device: torch.device
    dist: DistInfo = field(default_factory=DistInfo)
    wrap: Callable[[nn.Module], nn.Module] = lambda module: module  # DDP and/or torch.compile, per the config
    class_names: list[str] = field(default_factory=list)  # of the training data; [] when unlabelled
    captions: Any = None  # the training data's `captions.Captions` (text-to-image), or None
    root: Path | None = None  # the run directory (a task may keep files there, e.g. cached text embeddings)
    train_data: Any = None  # the training split as loaded (`data.ImageData` or a streamed folder)
    hooks: Hooks = field(default_factory=Hooks)  # figures and metrics, asked for by name
    progress: bool = True  # progress bars wanted (False: --no-progress, or not the main process)


@dataclass
class StepResult:
    """A step's losses (device scalars, not synced) and whether it was applied (a device bool: False when a
    loss or gradient was not finite and the update was skipped)."""

    losses: dict[str, torch.Tensor]
    finite: torch.Tensor


class Task:
    """Base of training tasks. Subclasses set `name`, build everything in __init__ and implement `step`."""

    name = "task"

    def __init__(self, cfg: Config, ctx: TaskContext):
        self.cfg, self.ctx, self.device = cfg, ctx, ctx.device

    @classmethod
    def configure(cls, cfg: Config, data) -> Config:
        """Fill the config's dataset-derived fields (sizes, classes) from the training data, in place."""
        return cfg

    def modules(self) -> dict[str, nn.Module]:
        """Every module a checkpoint holds, by part name (weights and their EMA copies)."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer, by the part name it trains (the loop sets their learning rate each step)."""
        raise NotImplementedError

    def load(self, ckpt: Checkpoint) -> None:
        """Restore modules and optimizers from a checkpoint written by this task."""
        for name, module in self.modules().items():
            ckpt.load_module(name, module)
        for name, optimizer in self.optimizers().items():
            ckpt.load_optimizer(name, optimizer)

    def training_data(self) -> Any:
        """What the loop draws batches from: the training data as loaded, or the task's view of it (latent
        diffusion: the training set's cached latents)."""
        return self.ctx.train_data

    def step(self, batch: Any, step: int) -> StepResult:
        raise NotImplementedError

    def validation_loss(self, data) -> float:
        """A loss on held-out data with fixed randomness, lower is better (picks `best`)."""
        raise NotImplementedError

    def evaluate(self, step: int) -> dict[str, float] | None:
        """Optional metrics at `train.eval_every` (None: this task has none)."""
        return None

    def pictures(self, root: Path, step: int | None) -> None:
        """Pictures of the model during training (`step`) and at the end (`step` None)."""

    def finish(self, root: Path) -> None:
        """Files the task leaves in the run directory when training ends (main process; a fine-tuning: its
        adapter)."""

    def metadata(self) -> dict[str, Any]:
        """Extra fields for every checkpoint's metadata (class names, parameter count, ...)."""
        return {}


# ---------------------------------------------------------------- shared by tasks


class EMA:
    """An exponential moving average of a module's weights (Polyak averaging), with a warm-up of the decay."""

    def __init__(self, module: nn.Module, decay: float):
        self.module = copy.deepcopy(module).requires_grad_(False).eval()
        self.decay = decay

    def decay_at(self, step: int) -> float:
        return ema_decay_at(self.decay, step)

    def update(self, module: nn.Module, step: int) -> None:
        ema_update(self.module, module, self.decay_at(step))


def adamw(module: nn.Module, cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    """AdamW as the config sets it. Fused (one kernel for all parameters) on GPUs and, with torch >= 2.4, on
    CPUs; it also skips non-finite steps without a host sync (faults.guarded_step)."""
    tc = cfg.train
    params = [p for p in module.parameters() if p.requires_grad]  # a fine-tuning trains its adapters only
    return torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.999),
                             fused=device.type in ("cuda", "cpu") or None)


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params, grad_clip: float,
                   check_loss: bool = True) -> torch.Tensor:
    """Backward, clip and step; the update is skipped when a gradient (or, with `check_loss`, the loss) is not
    finite. Returns that flag as a device bool, without a host sync. Under DDP the gradients are all-reduced,
    so every rank agrees from the gradient alone (pass check_loss=False)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    finite = torch.isfinite(faults.grad_norm(params, grad_clip))
    if check_loss:
        finite &= torch.isfinite(loss.detach())
    faults.guarded_step(optimizer, finite)
    return finite
