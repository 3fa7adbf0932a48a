"""The distillation task: a student initialised from a trained diffusion run (the teacher) and tuned into a
consistency model (`diffusion.consistency`) that samples in 1-4 network calls, the teacher's guidance distilled
into it. Everything else is the diffusion task's: data (pixels, latents, captions), conditioning, EMA, checkpoints
and pictures; the loop resumes, logs and stops it as any run.

    noisecraft distill --checkpoint runs/digits --out runs/digits-cd      # `student_config` + `train`

The student run records its teacher (checkpoint path, sha256, step) and keeps what sampling needs (its own
weights, config, text embeddings, autoencoder copy), so `sample`, `evaluate`, `explain` and `serve` need only it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from noisecraft.autoencoder.codec import derived_codec_path
from noisecraft.config import Config, apply_overrides
from noisecraft.diffusion import Denoiser
from noisecraft.errors import UserError
from noisecraft.models import build_model
from noisecraft.registry import DISTILLATIONS
from noisecraft.rundir import RunDir, content_hash, run_root
from noisecraft.samplers import cfg_denoiser, get_sigmas
from noisecraft.train.diffusion import DiffusionTask
from noisecraft.train.task import TaskContext

STUDENT_SAMPLER, STUDENT_STEPS = "consistency", 2  # what a student draws with unless told otherwise
# A distillation's training settings where the teacher's do not carry over (measured: benchmarks/fewstep.py).
STUDENT_TRAIN = {"train.steps": 300, "train.lr": 2e-4, "train.warmup_steps": 0, "train.lr_schedule": "constant",
                 "train.ema_decay": 0.95, "train.posthoc_ema": (),  # post-hoc EMA: diffusion runs only
                 "train.num_threads": 0}  # this machine's threads, not the teacher's


def student_config(teacher: str | Path, method: str = "cd", steps: int | None = None,
                   overrides: dict | None = None) -> Config:
    """The config of a student of the run or checkpoint `teacher`: the teacher's data, network and diffusion, the
    distillation's training settings, its guidance recorded to be distilled, and few-step unguided sampling."""
    from noisecraft.checkpoint import load_checkpoint

    ckpt = load_checkpoint(teacher, "best")
    task = ckpt.meta.get("task", "diffusion")
    if task == "autoencoder":
        raise UserError(f"{teacher} is an autoencoder run: it draws nothing to distil; give a diffusion run")
    if ckpt.config.train.task == "distill":
        raise UserError(f"{teacher} is already a distilled student (of {ckpt.config.distill.teacher}): distil its "
                        f"teacher instead")
    cfg, s = ckpt.config, ckpt.config.sample
    flags = {**STUDENT_TRAIN, "train.task": "distill", "distill.method": method, "distill.teacher": str(ckpt.path),
             "distill.teacher_sha256": content_hash([ckpt.path]), "distill.teacher_guidance": s.guidance,
             "distill.teacher_guidance_interval": tuple(s.guidance_interval),
             "data.augment": (),  # the student learns the teacher's unaugmented ODE (its augment label stays 0)
             "sample.sampler": STUDENT_SAMPLER, "sample.steps": STUDENT_STEPS, "sample.guidance": 0.0,
             "sample.guidance_interval": ()}
    if steps is not None:
        if steps <= 0:
            raise UserError(f"--steps must be > 0, got {steps}")
        flags["train.steps"] = steps
    n = flags["train.steps"]
    flags.update({"train.val_every": max(1, n // 2), "train.sample_every": max(1, n // 2),
                  "train.ckpt_every": max(1, n // 2), "distill.grid_ramp_steps": n})
    copy = derived_codec_path(cfg, run_root(ckpt.path))
    if copy is not None:
        flags["autoencoder.path"] = copy
    return apply_overrides(cfg, {**flags, **(overrides or {})})


def load_teacher(cfg: Config, device: torch.device) -> tuple[Denoiser, int | None]:
    """The frozen teacher denoiser of `distill.teacher` (EMA weights) and its step; refused if the file is gone or
    is not the one the distillation started from."""
    from noisecraft.checkpoint import load_recorded

    dc = cfg.distill
    ckpt = load_recorded(dc.teacher, dc.teacher_sha256, "teacher", "distillation", "distill.teacher")
    net = ckpt.load_module("net_ema", build_model(ckpt.config.model))
    return Denoiser(net, ckpt.config.diffusion).to(device).eval().requires_grad_(False), ckpt.meta.get("step")


class DistillTask(DiffusionTask):
    """Parts: `net` (the student, initialised from the teacher), `net_ema` (its EMA: the consistency target and
    what sampling uses); optimizer `net`. The teacher is read from `distill.teacher` and never saved."""

    name = "distill"

    def __init__(self, cfg: Config, ctx: TaskContext):
        super().__init__(cfg, ctx)
        self.teacher, self.teacher_step = load_teacher(cfg, self.device)
        self.net.load_state_dict(self.teacher.net.state_dict())  # a resumed run then loads its own weights
        self.ema.module.load_state_dict(self.teacher.net.state_dict())
        dc = cfg.distill
        interval = tuple(dc.teacher_guidance_interval) or None
        self.guided_teacher = cfg_denoiser(self.teacher, dc.teacher_guidance, self.cond.null(), interval)
        self.loss_fn = DISTILLATIONS.load(dc.method)
        self._grids: dict[int, torch.Tensor] = {}

    def grid(self, step: int) -> torch.Tensor:
        """The teacher's noise levels at `step` (N + 1 values ending in 0): N grows geometrically from
        distill.grid_start to grid_end over distill.grid_ramp_steps, coarse jumps first, as in consistency
        training's schedule; a run resumed for more steps goes on at grid_end."""
        dc = self.cfg.distill
        frac = step / max(1, dc.grid_ramp_steps - 1)
        n = round(dc.grid_start * (dc.grid_end / dc.grid_start) ** min(1.0, frac))
        if n not in self._grids:  # the training timesteps (or Karras levels), made once per size
            self._grids[n] = get_sigmas(self.teacher, "ddim", n).to(self.device)
        return self._grids[n]

    def _draws(self, x0: torch.Tensor, levels: int, generator: torch.Generator | None = None, rank: int = 0,
               global_batch: int | None = None):
        """Level indices (B,), noise and dropout uniforms, drawn for the global batch and sliced to this rank."""
        local = x0.shape[0]
        total, rows = global_batch or local, slice(rank * local, (rank + 1) * local)
        idx = torch.randint(0, levels, (total,), device=x0.device, generator=generator)[rows]
        eps = torch.randn((total, *x0.shape[1:]), device=x0.device, generator=generator)[rows]
        u = torch.rand(total, device=x0.device, generator=generator)[rows]
        return idx, eps, u

    def batch_loss(self, x0: torch.Tensor, y: torch.Tensor | None, step: int) -> torch.Tensor:
        """The mean distillation loss of a batch at `step`'s grid."""
        tc, grid = self.cfg.train, self.grid(step)
        idx, eps, u = self._draws(x0, len(grid) - 1, rank=self.ctx.dist.rank, global_batch=tc.batch_size)
        cond = self.condition(y, u < tc.label_dropout)  # the null condition stays meaningful (edits, guidance)
        return self.loss_fn(self.step_fn, self.ema_denoiser, self.guided_teacher, x0, cond, grid[idx],
                            grid[idx + 1], eps, self.cfg.distill.huber_c).mean()

    def held_out_loss(self, x0: torch.Tensor, cond: dict | None, generator: torch.Generator) -> torch.Tensor:
        """The distillation loss of the EMA student against itself, at the final grid."""
        grid = self.grid(self.cfg.distill.grid_ramp_steps)
        idx, eps, _ = self._draws(x0, len(grid) - 1, generator=generator)
        return self.loss_fn(self.ema_denoiser, self.ema_denoiser, self.guided_teacher, x0, cond, grid[idx],
                            grid[idx + 1], eps, self.cfg.distill.huber_c)

    def metadata(self):
        dc = self.cfg.distill
        return {**super().metadata(), "teacher": {"path": dc.teacher, "sha256": dc.teacher_sha256,
                                                  "step": self.teacher_step, "method": dc.method}}

    def pictures(self, root: Path, step: int | None) -> None:
        """Sample grids at the student's default (few) steps; at the end, the few-step figure beside the
        teacher."""
        if step is not None:
            self.sample_grid(RunDir(root).grid(step))
            return
        self.sample_grid(RunDir(root).grid())
        self.ctx.hooks.figure(self.pipeline(), "fewstep", RunDir(root).figure("fewstep"))
