"""The fine-tuning task: a low-rank adapter (LoRA, Hu et al. 2021, through peft: `noisecraft.adapters`) trained on
a frozen diffusion run (the base) from a few images, with DreamBooth's prior preservation (Ruiz et al. 2023):
images the base draws for its own classes or prompts join every batch, so the adapter teaches the new concept or
style without unteaching the rest. Everything else is the diffusion task's; the loop resumes, logs and stops it.

    noisecraft finetune --checkpoint runs/digits-text --data-root nines/ --out runs/nines    # `finetune_config`
    noisecraft sample runs/digits-text --lora runs/nines:0.8 --prompt "a handwritten 9"

Checkpoints hold only the adapter (`lora`, `lora_ema`); the base is read from `finetune.base` (path and sha256
recorded). At the end the EMA adapter is written to `<run>/adapter/` in peft's layout (`adapters.save_adapter`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn as nn

from noisecraft.adapters import LoraParts, add_lora, save_adapter
from noisecraft.conditioning.training import training_conditioner_class
from noisecraft.config import Config, FinetuneConfig, apply_overrides
from noisecraft.data import DIGIT_DATASETS, to_model_range
from noisecraft.diffusion import diffusion_loss
from noisecraft.errors import UserError
from noisecraft.rundir import RunDir, content_hash
from noisecraft.train.diffusion import DiffusionTask, global_batch_draws
from noisecraft.train.task import TaskContext

# A fine-tuning's training settings where the base's do not carry over, measured (benchmarks/lora.py: a small adapter
# takes a higher learning rate than a whole network; batches of 8 new images, and finetune.prior_batch of the
# prior), its EMA that of about the last 50 steps (at a constant rate the last few steps' noise would decide the
# adapter). The threads are this machine's, not the base's.
FINETUNE_TRAIN = {"train.steps": 300, "train.batch_size": 8, "train.lr": 4e-3, "train.warmup_steps": 20,
                  "train.lr_schedule": "constant", "train.ema_decay": 0.98, "train.posthoc_ema": (),
                  "train.eval_every": 0, "train.best_metric": "val_loss", "train.num_threads": 0}
GRID_ROWS = 6  # the rows of a text fine-tuning's sample grids: its first captions (a class one: every class)


def finetune_config(base: str | Path, data_root: str | Path, rank: int | None = None, steps: int | None = None,
                    overrides: dict | None = None) -> Config:
    """The config of a fine-tuning of the run or checkpoint `base` on the image folder `data_root`: the base's
    network, diffusion and sampling, the folder as data at the base's image size, the adapter's settings."""
    from noisecraft.checkpoint import load_checkpoint

    ckpt = load_checkpoint(base, "best")
    cfg = dataclasses.replace(ckpt.config, finetune=FinetuneConfig())  # the adapter's settings are not the base's
    if ckpt.meta.get("task", "diffusion") != "diffusion" or cfg.autoencoder.latent:
        raise UserError(f"{base} is a {cfg.train.task} run{' in a latent space' if cfg.autoencoder.latent else ''}: "
                        f"finetune adapts a pixel-space diffusion run")
    conditioning = training_conditioner_class(cfg.model)
    flags = {**FINETUNE_TRAIN, "train.task": "finetune", "finetune.base": str(ckpt.path),
             "finetune.base_sha256": content_hash([ckpt.path]), "finetune.prior_prompts": default_prior(ckpt),
             "data.dataset": "folder", "data.data_root": str(data_root), "data.classes": (), "data.subset": 0,
             "data.augment": (), "data.balance": "none", "data.hflip": False, "data.image_size": cfg.model.image_size,
             "data.captions": conditioning.folder_captions}
    for flag, value in (("finetune.rank", rank), ("train.steps", steps)):
        if value is not None:
            if value <= 0:
                raise UserError(f"--{flag.split('.')[1]} must be > 0, got {value}")
            flags[flag] = value
    n = (overrides or {}).get("train.steps", flags["train.steps"])
    flags.update({"train.val_every": max(1, int(n) // 4), "train.sample_every": int(n),
                  "train.ckpt_every": max(1, int(n) // 4)})
    return apply_overrides(cfg, {**flags, **(overrides or {})})


def default_prior(ckpt) -> tuple[str, ...]:
    """What the base drew that the adapter must keep: its classes (names), or for a text run one caption each."""
    cfg = ckpt.config
    names = list(cfg.data.classes or ckpt.meta.get("class_names", []))
    return training_conditioner_class(cfg.model).default_prior(names, cfg.data.dataset in DIGIT_DATASETS)


def load_base(cfg: Config, net: nn.Module):
    """Load the base's EMA weights into `net`; refused when the file is gone or changed. Returns its checkpoint."""
    from noisecraft.checkpoint import load_recorded

    f = cfg.finetune
    ckpt = load_recorded(f.base, f.base_sha256, "base", "fine-tuning", "finetune.base")
    ckpt.load_module("net_ema", net)
    return ckpt


def single_class(cfg: Config) -> str:
    """The class of a folder without labels: finetune.trigger, else its one sub-folder's name (a folder of one
    class loads as unlabelled)."""
    root = Path(cfg.data.data_root or ".")
    subdirs = [d.name for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
    return cfg.finetune.trigger or (subdirs[0] if len(subdirs) == 1 else "")


def kept_prior(cfg: Config, ctx: TaskContext) -> list[str]:
    """The prior prompts or classes the new images do not themselves teach. The base's images for the very caption
    or class the data carries would pull the adapter back to the base (a style taught on "a handwritten three"
    against the base's upright "a handwritten three"): DreamBooth's prior is the class, never the data's prompt."""
    taught = set(ctx.captions.texts) if ctx.captions is not None else {*ctx.class_names, single_class(cfg)}
    return [p for p in cfg.finetune.prior_prompts if p not in taught]


class FinetuneTask(DiffusionTask):
    """Parts: `lora` (the adapter's weights), `lora_ema` (their EMA: what sampling and the adapter file use);
    optimizer `lora`. The base network is loaded from `finetune.base`, frozen, and never saved."""

    name = "finetune"

    def __init__(self, cfg: Config, ctx: TaskContext):
        self.prior_prompts = kept_prior(cfg, ctx)
        self.prior_batch = cfg.finetune.prior_batch or cfg.train.batch_size
        if self.prior_batch % ctx.dist.world_size:
            raise UserError(f"finetune.prior_batch ({self.prior_batch}) must divide among the "
                            f"{ctx.dist.world_size} processes")
        share = self.prior_batch // ctx.dist.world_size
        self._prior_rows = slice(ctx.dist.rank * share, (ctx.dist.rank + 1) * share)  # this process's of a pick
        super().__init__(cfg, ctx)
        self._prior: tuple[torch.Tensor, torch.Tensor] | None = None

    def build_net(self) -> nn.Module:
        net = super().build_net()
        base = load_base(self.cfg, net)
        self.base_step, self._base_class_names = base.step, list(base.meta.get("class_names", []))
        f = self.cfg.finetune
        return add_lora(net, self.cfg.model.arch, f.targets, f.rank, f.alpha or None)

    @classmethod
    def configure(cls, cfg: Config, data) -> Config:
        """The base's network as it is; the data must fit it (channels, and captions or the base's classes)."""
        m = cfg.model
        if data.channels != m.in_channels:
            raise UserError(f"the images in {cfg.data.data_root} have {data.channels} channel(s), the base draws "
                            f"{m.in_channels}")
        training_conditioner_class(m).check_folder(data, cfg.data.data_root)
        return cfg

    def caption_texts(self, ctx: TaskContext) -> list[str]:
        return list(ctx.captions.texts) + self.prior_prompts  # prior prompts after the training captions

    def modules(self):
        return {"lora": LoraParts(self.net), "lora_ema": LoraParts(self.ema.module)}

    def optimizers(self):
        return {"lora": self.optimizer}

    def training_data(self):
        data = super().training_data()
        data = self._base_labels(data)
        if self._prior is None and self.cfg.finetune.prior_images and self.prior_prompts:
            self._prior = self._draw_prior()
        return data

    def validation_loss(self, data) -> float:
        return super().validation_loss(self._base_labels(data))

    def _base_labels(self, data):
        """A class base: the folder's labels renumbered as the base's classes (by name, or all the trigger)."""
        return self.cond.base_labels(data, self.class_names_of_base, self.single_class)

    def single_class(self) -> str:
        return single_class(self.cfg)

    def class_names_of_base(self) -> list[str]:
        return self._base_class_names  # read with its weights (build_net)

    def _draw_prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The base's images for the prior prompts or classes, (P, C, H, W) in [-1, 1], and their condition ids;
        drawn once (adapter B = 0: the base itself) and kept in the run so a resumed run trains on the same."""
        from safetensors.torch import load_file, save_file

        f, path = self.cfg.finetune, RunDir(self.ctx.root).prior if self.ctx.root is not None else None
        if path is not None and path.is_file():  # a resumed run: the images it started with
            saved = load_file(str(path))
            return to_model_range(saved["images"].to(self.device)), saved["ids"].to(self.device)
        k = len(self.prior_prompts)
        which = [i % k for i in range(f.prior_images)]
        ids, conditions = self.cond.prior_conditions(self.prior_prompts, which, self.class_names_of_base)
        images = self.pipeline().generate(labels=conditions, seed=10_000, progress=self.ctx.progress)
        x0 = to_model_range(images.to(self.device))
        if path is not None and self.ctx.dist.is_main:
            save_file({"images": images.contiguous(), "ids": ids}, str(path))
        return x0, ids.to(self.device)

    def batch_loss(self, x0: torch.Tensor, y: torch.Tensor | None, step: int,
                   augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        """The new images' denoising loss, plus prior_weight times that of finetune.prior_batch of the base's
        images (over all processes: each draws the same global pick and takes its own slice)."""
        if self._prior is None:
            return super().batch_loss(x0, y, step, augment_labels)
        prior_x0, prior_ids = self._prior
        pick = torch.randint(0, len(prior_x0), (self.prior_batch,), device=x0.device)[self._prior_rows]
        x = torch.cat([x0, prior_x0[pick].to(x0.dtype)])
        ids = torch.cat([y, prior_ids[pick]]) if y is not None else None
        sigma, eps, u = global_batch_draws(self.denoiser, x, self.cfg.train.batch_size + self.prior_batch,
                                           self.ctx.dist.rank)
        per_image = diffusion_loss(self.step_fn, x, self.condition(ids, u < self.cfg.train.label_dropout),
                                   sigma=sigma, eps=eps)
        b = x0.shape[0]
        return per_image[:b].mean() + self.cfg.finetune.prior_weight * per_image[b:].mean()

    def grid_rows(self):
        """A text fine-tuning's first GRID_ROWS captions (what it was taught); a class one's every class."""
        rows = super().grid_rows()
        return rows[:GRID_ROWS] if isinstance(rows, list) else rows

    def final_pictures(self, run: RunDir) -> None:
        """None beside the grids: the base's other pictures (forward and reverse process, cross-attention) would
        cost more than the grid in a short fine-tuning; `noisecraft explain RUN` draws them with the adapter."""

    def metadata(self):
        f = self.cfg.finetune
        adapter = sum(p.numel() for p in LoraParts(self.net).parameters())
        return {**super().metadata(), "adapter_params": adapter,
                "base": {"path": f.base, "sha256": f.base_sha256, "step": self.base_step}}

    def trigger(self) -> str:
        """The prompt or class recorded as calling the adapter up: finetune.trigger, else the data's."""
        return self.cond.trigger(self.cfg.finetune.trigger, list(self.ctx.class_names), self.single_class)

    def finish(self, root: Path) -> None:
        """The EMA adapter in peft's layout in `<run>/adapter/`, with the base and the trigger recorded."""
        f = self.cfg.finetune
        save_adapter(self.ema.module, RunDir(root).adapter, {
            "name": root.name, "base": f.base, "base_sha256": f.base_sha256, "base_step": self.base_step,
            "trigger": self.trigger(), "licence": f.licence or None, "arch": self.cfg.model.arch,
            "targets": f.targets, "rank": f.rank, "prior_prompts": self.prior_prompts, "prior_weight": f.prior_weight,
            "steps": self.cfg.train.steps})
