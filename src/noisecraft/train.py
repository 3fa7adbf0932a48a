"""The training loop: AdamW with warm-up, EMA, mixed precision, validation, checkpoints, resume, pictures.

Randomness is a function of (seed, step): the batch (see `data.DeviceBatcher`) and the global torch RNG are
re-seeded every step, so `--resume` from step k continues exactly as an uninterrupted run would.
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import signal
import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from torch.nn.parallel import DistributedDataParallel

from noisecraft import distributed, faults
from noisecraft.checkpoint import load_checkpoint, load_optimizer, load_state, save_checkpoint
from noisecraft.conditioning import class_cond
from noisecraft.config import Config, to_json
from noisecraft.data import ImageData, load_dataset, load_train_data, make_batcher, to_model_range, to_uint8
from noisecraft.diffusion import Denoiser, diffusion_loss, sample_sigmas
from noisecraft.diffusion.schedules import alpha_bar_from_sigma
from noisecraft.errors import Interrupted, UserError
from noisecraft.device import pick_device
from noisecraft.generate import generate
from noisecraft.models import build_model, count_parameters
from noisecraft.precision import autocast_ctx
from noisecraft.samplers import get_sigmas


class RunPaths:
    """Where a run directory keeps its files."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.ckpt_dir = self.root / "checkpoints"
        self.last = self.ckpt_dir / "last.safetensors"
        self.best = self.ckpt_dir / "best.safetensors"
        self.log = self.root / "log.jsonl"
        self.loss_png = self.root / "loss.png"
        self.samples = self.root / "samples"

    def step_ckpt(self, step: int) -> Path:
        return self.ckpt_dir / f"step_{step:08d}.safetensors"

    def make(self) -> None:
        try:
            for d in (self.root, self.ckpt_dir, self.samples):
                d.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write_test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise UserError(f"cannot write to run directory {self.root}: {e.strerror}") from None


def keep_step_checkpoint(paths: RunPaths, step: int, keep: int) -> None:
    """Hard-link `last` as step_N (no extra write) and drop all but the newest `keep` step checkpoints."""
    if keep <= 0:
        return
    target = paths.step_ckpt(step)
    for suffix in (".safetensors", ".json"):
        src, dst = paths.last.with_suffix(suffix), target.with_suffix(suffix)
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:  # file systems without hard links
            shutil.copyfile(src, dst)
    for old in sorted(paths.ckpt_dir.glob("step_*.safetensors"))[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    ema_p = [p for p in ema.parameters()]
    model_p = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_p, model_p, 1.0 - decay)


def ema_decay_at(step: int, decay: float) -> float:
    """Warm-up of the EMA decay, (1 + step) / (10 + step), capped at `decay`: early averages forget the init."""
    return min(decay, (1 + step) / (10 + step))


def lr_at(step: int, cfg) -> float:
    """Linear warm-up, then constant (Ho et al. 2020 use constant 2e-4 after 5000 warm-up steps)."""
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + 17) % (2**63 - 1)


def global_batch_draws(denoiser: Denoiser, x0: torch.Tensor, global_batch: int, rank: int):
    """Noise levels (B,), noise (B, C, H, W) and label-dropout uniforms (B,) drawn for the whole global batch
    from the step-seeded RNG, then sliced to this rank's share: N data-parallel processes draw exactly what one
    process with the same global batch draws (the slices are cheap next to the network)."""
    local = x0.shape[0]
    rows = slice(rank * local, (rank + 1) * local)
    sigma = sample_sigmas(denoiser, global_batch, x0.device)[rows]
    eps = torch.randn((global_batch, *x0.shape[1:]), device=x0.device)[rows]
    u = torch.rand(global_batch, device=x0.device)[rows]
    return sigma, eps, u


@torch.no_grad()
def validation_loss(denoiser: Denoiser, data: ImageData, cfg: Config, device: torch.device) -> float:
    """Mean loss of `denoiser` on the held-out split with fixed noise (the same every call)."""
    was_training = denoiser.training
    denoiser.eval()
    g = torch.Generator(device).manual_seed(12345)
    total, count = 0.0, 0
    for start in range(0, len(data), cfg.train.batch_size):
        x0 = to_model_range(data.images[start:start + cfg.train.batch_size].to(device))
        y = data.labels[start:start + cfg.train.batch_size].to(device) if data.labels is not None else None
        with autocast_ctx(device, cfg.train.precision):
            loss = diffusion_loss(denoiser, x0, class_cond(y), generator=g)
        total += float(loss.sum())
        count += len(x0)
    denoiser.train(was_training)
    return total / max(1, count)


def sample_grid(denoiser: Denoiser, cfg: Config, class_names: list[str], path: Path, device, per_class: int = 8,
                steps: int | None = None) -> None:
    """A grid with one row per class (or 8 x 8 unconditional samples), fixed seeds so rows compare over time."""
    from noisecraft.viz import save_grid

    k = cfg.model.num_classes
    n = per_class * k if k else 64
    labels = torch.arange(k).repeat_interleave(per_class) if k else None
    images = generate(denoiser, n=n, labels=labels, num_classes=k,
                      shape=(cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size),
                      sampler=cfg.sample.sampler, steps=steps or cfg.sample.steps, guidance=cfg.sample.guidance,
                      guidance_interval=cfg.sample.guidance_interval,
                      seed=0, clip_x0=cfg.sample.clip_x0, device=device, precision=cfg.sample.precision)
    save_grid(images, path, nrow=per_class if k else 8)


def process_figures(denoiser: Denoiser, cfg: Config, data: ImageData, root: Path, device) -> None:
    """forward_process.png (real images noised to growing t) and reverse_process.png (x_t while sampling)."""
    from noisecraft.viz import plot_process

    n_rows, n_cols = 4, 8
    x0 = to_model_range(data.images[:n_rows].to(device))
    # Forward: x = x0 + sigma eps, shown in the VP view sqrt(alpha_bar) x (what the network sees).
    sigmas = get_sigmas(denoiser, "ddim", n_cols - 1).flip(0).to(device)  # 0 first, then growing noise
    g = torch.Generator(device).manual_seed(0)
    eps = torch.randn(x0.shape, generator=g, device=device)
    rows = [[] for _ in range(n_rows)]
    for s in sigmas:
        x = (x0 + s * eps) * alpha_bar_from_sigma(s).sqrt()
        for r in range(n_rows):
            rows[r].append(to_uint8(x[r]).cpu())
    plot_process(rows, [f"σ={float(s):.2g}" for s in sigmas], "forward process q(x_t | x_0)", root / "forward_process.png")

    # Reverse: the sample x_t (VP view) at evenly spaced steps of a DDIM run, and the final image.
    steps = 50
    keep = set(torch.linspace(0, steps - 1, n_cols - 1).round().long().tolist())
    snaps: list[tuple[float, torch.Tensor]] = []

    def record(info):
        if info["i"] in keep:
            snaps.append((float(info["sigma"]), (info["x"] * alpha_bar_from_sigma(info["sigma"]).sqrt()).cpu()))

    k = cfg.model.num_classes
    labels = torch.arange(n_rows) % k if k else None
    final = generate(denoiser, n=n_rows, labels=labels, num_classes=k, shape=tuple(x0.shape[1:]), sampler="ddim",
                     steps=steps, guidance=cfg.sample.guidance, guidance_interval=cfg.sample.guidance_interval, seed=0,
                     device=device, precision=cfg.sample.precision,
                     callback=record)
    rows = [[to_uint8(x[r]) for _, x in snaps] + [final[r]] for r in range(n_rows)]
    plot_process(rows, [f"σ={s:.2g}" for s, _ in snaps] + ["x0"], "reverse process (DDIM, 50 steps)",
                 root / "reverse_process.png")


def train(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train a model as `cfg` describes into run directory `out`; returns a summary dict.

    Crash safety: checkpoints are replaced atomically, so a kill at any moment leaves the previous one whole,
    and `resume=True` continues from `checkpoints/last` exactly (same batches, noise and log records). SIGINT
    or SIGTERM finishes the current step, saves `last` and raises `errors.Interrupted` (the CLI exits 130 or
    143). Steps with a non-finite loss or gradient are skipped with a warning; `train.max_nonfinite_steps`
    of them in a row stop the run with a UserError, keeping the last good checkpoint. A full disk or an
    unwritable run directory raises a UserError naming the file.
    """
    with faults.GracefulStop() as stop:
        try:
            return _train(cfg, out, resume, progress, stop)
        except OSError as e:
            err = faults.disk_error(e, f"cannot write to run directory {out}")
            if err is None:
                raise
            raise err from None


def _train(cfg: Config, out: str | Path, resume: bool, progress: bool, stop: faults.GracefulStop) -> dict:
    paths = RunPaths(out)
    tc = cfg.train
    # Under torchrun: one process per rank (NCCL on GPU, gloo on CPU); rank 0 alone writes files and logs.
    dist_info, device = distributed.setup(pick_device(tc.device))
    main = dist_info.is_main
    if device.type == "cpu":
        distributed.configure_cpu_threads(tc.num_threads, dist_info)

    start_step, best_val, tensors, meta = 0, math.inf, None, None
    if resume and not paths.last.is_file():
        if not paths.config.is_file():
            raise UserError(f"nothing to resume: {paths.last} does not exist")
        # Stopped before its first checkpoint: run it again from step 0 with its saved config.
        warnings.warn(f"{paths.root} has no checkpoint yet: starting it again from step 0", stacklevel=3)
        steps, cfg = tc.steps, Config.load(paths.config)
        cfg.train.steps, tc, resume = steps, cfg.train, False
        if main:
            faults.truncate_log(paths.log, 0)
    if resume:
        tensors, meta, saved = load_checkpoint(paths.last)
        if tc.steps < meta["step"]:
            raise UserError(f"--steps {tc.steps} is below the step of {paths.last} ({meta['step']})")
        saved.train.steps = tc.steps  # the one thing a resume may change: train longer
        cfg, tc = saved, saved.train
        start_step, best_val = meta["step"], meta.get("best_val_loss", math.inf)
    elif paths.last.is_file():
        raise UserError(f"{paths.root} already holds a run; pass --resume to continue it or choose another --out")

    train_data = load_train_data(cfg.data)  # in memory, or a folder streamed by DataLoader workers
    val_data = load_dataset(cfg.data, "val")
    if meta is not None:  # the data must still give the images the checkpoint was trained on
        m, d = cfg.model, train_data
        if (m.in_channels, m.image_size, m.num_classes) != (d.channels, d.image_size, d.num_classes):
            raise UserError(f"{paths.last} was trained on {m.in_channels}x{m.image_size}x{m.image_size} images in "
                            f"{m.num_classes} classes, but the data now gives {d.channels}x{d.image_size}x"
                            f"{d.image_size} in {d.num_classes}")
    cfg.model.in_channels, cfg.model.image_size = train_data.channels, train_data.image_size
    cfg.model.num_classes = train_data.num_classes
    if main:
        paths.make()
        cfg.save(paths.config)
        if resume:  # a crash may have left log records past the checkpoint, and temp files
            faults.truncate_log(paths.log, start_step)
            faults.remove_stale_temp_files(paths.ckpt_dir)
    distributed.barrier(dist_info)

    torch.manual_seed(tc.seed)  # the initial weights (DDP then broadcasts rank 0's to every rank)
    net = build_model(cfg.model).to(device)
    channels_last = device.type == "cuda" if tc.channels_last is None else tc.channels_last
    if channels_last:  # NHWC: faster convs on tensor-core GPUs (measured slower on CPU, hence off there)
        net = net.to(memory_format=torch.channels_last)
    denoiser = Denoiser(net, cfg.diffusion).to(device)
    ema_net = copy.deepcopy(net).requires_grad_(False)
    ema = Denoiser(ema_net, cfg.diffusion).to(device).eval()
    # Fused AdamW: one kernel for all parameters, on GPUs and (torch >= 2.4) on CPUs, where it measured 1.1 ms a
    # step against 7.1 ms for the per-parameter loop on the digits net (2-core CPU); it also skips non-finite
    # steps without a host sync (faults.guarded_step).
    optimizer = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.999),
                                  fused=device.type in ("cuda", "cpu") or None)
    if tensors is not None:
        load_state(net, tensors, "model", meta["path"])
        load_state(ema_net, tensors, "ema", meta["path"])
        load_optimizer(optimizer, tensors, meta)
    # DDP (which all-reduces gradients in backward) and the compiled module share the weights of `net`;
    # EMA and checkpoints use the plain module and its parameter names.
    step_net = net
    if dist_info.enabled:
        step_net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if tc.compile:
        step_net = torch.compile(step_net)
    step_fn = denoiser if step_net is net else Denoiser(step_net, cfg.diffusion)

    batcher = make_batcher(train_data, tc.batch_size, device, hflip=cfg.data.hflip, seed=tc.seed,
                           rank=dist_info.rank, world_size=dist_info.world_size, num_workers=cfg.data.num_workers)
    n_params = count_parameters(net)
    extra = {"class_names": train_data.class_names, "params": n_params}
    if meta is not None and meta.get("best_score") is not None:  # best by train.best_metric, across resumes
        extra["best_score"] = meta["best_score"]

    last_good = f"{paths.last} (step {start_step})" if meta is not None else "none was written"

    def checkpoint(path: Path, step: int, val: float | None = None) -> None:
        nonlocal last_good
        if not faults.all_finite(net, ema_net):
            raise UserError(f"training diverged: the weights are not finite at step {step}; stopped without "
                            f"writing {path.name}, keeping the last good checkpoint ({last_good}); try a lower "
                            f"--train.lr")
        # The running log averages go along, so a resumed run writes the same log records.
        log_state = {"loss_sum": float(loss_sum), "loss_n": int(loss_n), "seconds": time.perf_counter() - t_start}
        try:
            save_checkpoint(path, model=net, ema=ema_net, optimizer=optimizer, config=cfg, step=step,
                            best_val_loss=best_val, val_loss=val, log_state=log_state, **extra)
        except OSError as e:
            raise UserError(f"could not write checkpoint {path}: {e.strerror or e}; kept the last checkpoint "
                            f"{last_good}") from None
        if path == paths.last:
            last_good = f"{paths.last} (step {step})"

    log = open(paths.log if main else os.devnull, "a")
    bar = tqdm(total=tc.steps, initial=start_step, desc="train", unit="step", disable=not (progress and main),
               dynamic_ncols=True)
    loss_sum = torch.zeros((), device=device)
    loss_n = torch.zeros((), dtype=torch.long, device=device)  # steps with a finite loss since the last record
    t_last, images_seen = time.perf_counter(), 0
    t_start = time.perf_counter()
    if meta is not None and isinstance(meta.get("log_state"), dict):
        ls = meta["log_state"]
        loss_sum.fill_(float(ls.get("loss_sum", 0.0)))
        loss_n.fill_(int(ls.get("loss_n", 0)))
        t_start -= float(ls.get("seconds", 0.0))
    nonfinite = faults.NonFiniteMonitor(tc.max_nonfinite_steps, device)
    stop_agreed = False  # under DDP every rank must stop at the same step: agreed at log intervals
    val = None
    net.train()
    stop.arm()  # from here SIGINT/SIGTERM stop after the current step, with a checkpoint
    for step in range(start_step, tc.steps):
        torch.manual_seed(step_seed(tc.seed, step))  # dropout, noise levels, noise, label dropout
        x0, y = batcher.batch(step)
        if channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        sigma, eps, u = global_batch_draws(denoiser, x0, tc.batch_size, dist_info.rank)
        if y is not None:  # label dropout for classifier-free guidance: the null class replaces a share of labels
            y = torch.where(u < tc.label_dropout, torch.full_like(y, cfg.model.num_classes), y)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, tc)
        with autocast_ctx(device, tc.precision):
            loss = diffusion_loss(step_fn, x0, class_cond(y), sigma=sigma, eps=eps).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # Skip the update when a gradient is inf/NaN. DDP has all-reduced the gradients, so every rank agrees;
        # a single process also checks its loss. No host sync (fused AdamW), see faults.guarded_step.
        loss = loss.detach()
        finite = torch.isfinite(faults.grad_norm(net.parameters(), tc.grad_clip))
        if not dist_info.enabled:
            finite &= torch.isfinite(loss)
        faults.guarded_step(optimizer, finite)
        nonfinite.update(finite)
        ema_update(ema_net, net, ema_decay_at(step, tc.ema_decay))
        loss_ok = torch.isfinite(loss)
        loss_sum += torch.where(loss_ok, loss, 0.0)
        loss_n += loss_ok
        images_seen += tc.batch_size  # the global batch, over all ranks
        done = step + 1

        if done % tc.log_every == 0 or done == tc.steps:
            now = time.perf_counter()
            # The only host sync, once per log interval: the ranks' loss sums and counts (so the log is the
            # global loss) and whether any rank was asked to stop.
            stats = torch.stack([loss_sum, loss_n.float(), torch.tensor(float(stop.signum is not None), device=device)])
            total, count, stop_flag = distributed.all_reduce_mean(stats, dist_info).tolist()
            stop_agreed = stop_flag > 0
            skipped = nonfinite.check(done, last_good)  # raises after max_nonfinite_steps bad steps in a row
            ips = images_seen / (now - t_last)
            rec = {"step": done, "loss": total / count, "lr": lr_at(step, tc), "img_per_s": ips,
                   "time": now - t_start} if count else {"step": done, "lr": lr_at(step, tc)}
            if skipped:
                rec["nonfinite_steps"] = skipped
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if count:
                bar.set_postfix(loss=f"{total / count:.4f}", img_s=f"{ips:.0f}")
            loss_sum.zero_()
            loss_n.zero_()
            images_seen, t_last = 0, now
        if main and (done % tc.val_every == 0 or done == tc.steps):  # the other ranks wait in the next all-reduce
            val = validation_loss(ema, val_data, cfg, device)
            log.write(json.dumps({"step": done, "val_loss": val}) + "\n")
            log.flush()
            if val < best_val:
                best_val = val
                if tc.best_metric == "val_loss":
                    checkpoint(paths.best, done, val)
        if main and tc.eval_every and (done % tc.eval_every == 0 or done == tc.steps):
            # Offline metrics of a few fast samples (noisecraft.evaluate.during_training); may pick `best`.
            from noisecraft.evaluate.during_training import eval_step

            if eval_step(ema, cfg, device, done, log, paths.root, extra):
                checkpoint(paths.best, done, val)
        if main and (done % tc.ckpt_every == 0 or done == tc.steps):
            checkpoint(paths.last, done, val)
            keep_step_checkpoint(paths, done, tc.keep_last)
        if main and done % tc.sample_every == 0 and done != tc.steps:
            sample_grid(ema, cfg, train_data.class_names, paths.samples / f"step_{done:08d}.png", device, steps=20)
        bar.update(1)
        if stop_agreed if dist_info.enabled else stop.signum is not None:
            if main and not (done % tc.ckpt_every == 0 or done == tc.steps):  # not saved above
                checkpoint(paths.last, done, val)
            bar.close()
            log.close()
            name = stop.name or "SIGTERM"
            raise Interrupted(f"stopped by {name} at step {done}: saved {paths.last}; continue with "
                              f"`noisecraft train --out {paths.root} --resume`", stop.signum or signal.SIGTERM)
    stop.release()
    bar.close()
    log.close()
    train_time = time.perf_counter() - t_start
    distributed.barrier(dist_info)  # every rank is done with the collectives; rank 0 alone draws the pictures
    if not main:
        distributed.teardown(dist_info)
        return {"steps": tc.steps, "start_step": start_step, "train_seconds": train_time, "rank": dist_info.rank}

    from noisecraft.viz import plot_loss_curves

    if tc.final_figures:
        plot_loss_curves(paths.log, paths.loss_png)
        sample_grid(ema, cfg, train_data.class_names, paths.samples / "final.png", device)
        process_figures(ema, cfg, val_data, paths.root, device)
    summary = {"steps": tc.steps, "start_step": start_step, "train_seconds": train_time, "best_val_loss": best_val,
               "params": n_params, "run_dir": str(paths.root)}
    (paths.root / "summary.json").write_text(to_json(summary) + "\n")
    distributed.teardown(dist_info)
    return summary
