"""The training loop: what every run shares, whatever it trains.

Run directory and status, resume, precision and devices, data-parallel processes, signals and graceful stop,
the cadence of logs, validation, metrics, checkpoints and pictures, the progress bar. What is trained (modules,
optimizers, the step, its pictures) is a task from `registry.TASKS`, built from the config (see `train.task`).

Randomness is a function of (seed, step): the batch (see `data.DeviceBatcher`) and the global torch RNG are
re-seeded every step, so `--resume` from step k continues exactly as an uninterrupted run would.
"""
from __future__ import annotations

import copy
import math
import signal
import time

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from noisecraft import distributed, faults
from noisecraft.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from noisecraft.config import Config, to_json
from noisecraft.data import draw_repeats, load_dataset, load_train_data, make_batcher
from noisecraft.device import pick_device
from noisecraft.errors import Interrupted, UserError
from noisecraft.precision import use_bf16
from noisecraft.registry import BEST_METRICS, TASKS
from noisecraft.rundir import RunDir, read_log
from noisecraft.seeds import step_seed
from noisecraft.train.task import Hooks, Task, TaskContext


def lr_at(step: int, cfg) -> float:
    """Linear warm-up over `warmup_steps`, then `lr_schedule`: constant (Ho et al. 2020: 2e-4 after 5000 warm-up
    steps) or cosine down to 0 at the last step."""
    if cfg.lr_schedule == "cosine" and step >= cfg.warmup_steps:
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def due(done: int, every: int, total: int) -> bool:
    return done % every == 0 or done == total


def train(cfg: Config, out, resume: bool = False, progress: bool = True, overwrite: bool = False,
          hooks: Hooks | None = None) -> dict:
    """Train what `cfg.train.task` names, as `cfg` describes, into run directory `out`; returns a summary dict.

    Crash safety: checkpoints are replaced atomically, so a kill at any moment leaves the previous one whole,
    and `resume=True` continues from `checkpoints/last` exactly (same batches, noise and log records). SIGINT
    or SIGTERM finishes the current step, saves `last` and raises `errors.Interrupted` (the CLI exits 130 or
    143). Steps with a non-finite loss or gradient are skipped with a warning; `train.max_nonfinite_steps`
    of them in a row stop the run with a UserError, keeping the last good checkpoint. A full disk or an
    unwritable run directory raises a UserError naming the file. status.json follows all of it. `hooks`: how
    figures and metrics are drawn (default: registry.TRAINING_HOOKS).
    """
    run = None
    with faults.GracefulStop() as stop:
        try:
            dist_info, device = distributed.setup(pick_device(cfg.train.device))
            run = RunDir(out, main=dist_info.is_main)
            return _train(cfg, run, resume, overwrite, progress, stop, dist_info, device, hooks or Hooks())
        except (Interrupted, KeyboardInterrupt) as e:
            if run is not None:
                run.status("interrupted", error=str(e) or "KeyboardInterrupt")
            raise
        except BaseException as e:
            err = faults.disk_error(e, f"cannot write to run directory {out}") if isinstance(e, OSError) else None
            if run is not None:
                run.status("failed", error=(str(err or e) or type(e).__name__).splitlines()[0])
            if err is None:
                raise
            raise err from None
        finally:
            if run is not None:
                run.close()


def _start(cfg, run: RunDir, resume, overwrite, dist_info, device, hooks: Hooks, progress: bool):
    """The run directory prepared (refused, overwritten or resumed), the data loaded, the config filled in from it,
    and the task built (its initial weights from train.seed, or the checkpoint's): (cfg, ckpt, task, train, val)."""
    if device.type == "cpu":
        distributed.configure_cpu_threads(cfg.train.num_threads, dist_info)
    cfg, resume = run.prepare(cfg, resume, overwrite)
    ckpt = load_checkpoint(run.last) if resume else None
    if ckpt is not None:
        cfg = RunDir.resumed(ckpt.config, ckpt.step, cfg.train.steps)
    distributed.barrier(dist_info)  # with --overwrite, the old run is gone before any rank reads or writes
    task_cls = TASKS.load(cfg.train.task)
    train_data = load_train_data(cfg.data)  # in memory, or a folder streamed by DataLoader workers
    val_data = load_dataset(cfg.data, "val")
    cfg = _configured(task_cls, cfg, train_data, ckpt)
    run.start(cfg, ckpt.step if ckpt else 0)
    distributed.barrier(dist_info)
    torch.manual_seed(cfg.train.seed)  # the initial weights (DDP then broadcasts rank 0's to every rank)
    task = task_cls(cfg, TaskContext(device, dist_info, _wrapper(cfg, dist_info, device), train_data.class_names,
                                     train_data.captions, run.root, train_data, hooks, progress))
    if ckpt is not None:
        task.load(ckpt)
    return cfg, ckpt, task, train_data, val_data


def _set_lr(task: Task, lr: float) -> None:
    for optimizer in task.optimizers().values():
        for group in optimizer.param_groups:
            group["lr"] = lr


def _train(cfg, run: RunDir, resume, overwrite, progress, stop, dist_info, device, hooks: Hooks) -> dict:
    progress = progress and run.main  # bars on the main process only
    cfg, ckpt, task, train_data, val_data = _start(cfg, run, resume, overwrite, dist_info, device, hooks, progress)
    tc = cfg.train
    start_step = ckpt.step if ckpt else 0
    meter = LossMeter(device, ckpt)
    saver = Saver(run, task, cfg, ckpt, meter)
    nonfinite = faults.NonFiniteMonitor(tc.max_nonfinite_steps, device)
    batcher = make_batcher(task.training_data(), tc.batch_size, device, hflip=cfg.data.hflip, seed=tc.seed,
                           rank=dist_info.rank, world_size=dist_info.world_size, num_workers=cfg.data.num_workers,
                           augment=cfg.data.augment, augment_p=cfg.data.augment_p,
                           repeats=draw_repeats(train_data, cfg.data.balance))
    bar = tqdm(total=tc.steps, initial=start_step, desc=f"train ({task.name})", unit="step",
               disable=not progress, dynamic_ncols=True)
    stop_agreed = False  # under DDP every rank must stop at the same step: agreed at log intervals
    stop.arm()  # from here SIGINT/SIGTERM stop after the current step, with a checkpoint
    for step in range(start_step, tc.steps):
        torch.manual_seed(step_seed(tc.seed, step))  # dropout, noise levels, noise, label dropout
        _set_lr(task, lr_at(step, tc))
        result = task.step(batcher.batch(step), step)
        nonfinite.update(result.finite)
        meter.add(result.losses, tc.batch_size)
        done = step + 1
        if due(done, tc.log_every, tc.steps):  # the only host sync: losses, and whether a rank was told to stop
            rec, stop_agreed = meter.record(dist_info, stop.signum is not None)
            skipped = nonfinite.check(done, saver.last_good)  # raises after max_nonfinite_steps bad steps in a row
            run.log("train", done, **rec, lr=lr_at(step, tc), **({"nonfinite_steps": skipped} if skipped else {}))
            run.status(step=done, images_per_s=rec.get("img_per_s"))
            bar.set_postfix({k: f"{v:.4g}" for k, v in rec.items() if k not in ("time",)}, refresh=False)
        if run.main:  # the other ranks wait in the next all-reduce
            _cadence(task, run, saver, val_data, done, tc)
        bar.update(1)
        if stop_agreed if dist_info.enabled else stop.signum is not None:
            if run.main and not due(done, tc.ckpt_every, tc.steps):  # not saved above
                saver.save(run.last, done)
            run.status(step=done)
            bar.close()
            raise Interrupted(f"stopped by {stop.name or 'SIGTERM'} at step {done}: saved {run.last}; continue with "
                              f"`noisecraft train --out {run.root} --resume`", stop.signum or signal.SIGTERM)
    stop.release()
    bar.close()
    train_time = meter.seconds()
    distributed.barrier(dist_info)  # every rank is done with the collectives; rank 0 alone draws the pictures
    summary = {"steps": tc.steps, "start_step": start_step, "train_seconds": train_time,
               "precision": "bf16" if use_bf16(device, tc.precision) else "fp32"}  # what `auto` resolved to
    if run.main:
        _finish(task, run, saver, tc, summary)
    else:
        summary["rank"] = dist_info.rank
    distributed.teardown(dist_info)
    return summary


def _cadence(task: Task, run: RunDir, saver: "Saver", val_data, done: int, tc) -> None:
    """Validation, metrics, checkpoints and pictures due after step `done` (main process)."""
    if due(done, tc.val_every, tc.steps):
        saver.val = task.validation_loss(val_data)
        run.log("val", done, val_loss=saver.val)
        if saver.val < saver.best_val:
            saver.best_val = saver.val
            if not BEST_METRICS.get(tc.best_metric).needs_eval:
                saver.save(run.best, done)
    if tc.eval_every and due(done, tc.eval_every, tc.steps):
        scores = task.evaluate(done)
        if scores is not None:
            run.log("eval", done, **scores)
            task.ctx.hooks.plot_metrics(read_log(run.log_path, "eval"), run.figure("metrics"))
            if saver.is_best(tc.best_metric, scores):
                saver.save(run.best, done)
    if due(done, tc.ckpt_every, tc.steps):
        saver.save(run.last, done)
        run.keep_step_checkpoint(done, tc.keep_last)
    if done % tc.sample_every == 0 and done != tc.steps:
        task.pictures(run.root, done)


def _finish(task: Task, run: RunDir, saver: "Saver", tc, summary: dict) -> None:
    """Final figures, summary.json (`summary` completed in place) and the finished status (main process)."""
    from noisecraft.viz import plot_loss_curves

    task.finish(run.root)
    if tc.final_figures:
        plot_loss_curves(read_log(run.log_path, "train"), read_log(run.log_path, "val"), run.figure("loss"))
        task.pictures(run.root, None)
    summary.update(best_val_loss=saver.best_val, params=task.metadata().get("params"), run_dir=str(run.root))
    run.summary_path.write_text(to_json(summary) + "\n")
    run.status("finished")


def _configured(task_cls: type[Task], cfg: Config, data, ckpt: Checkpoint | None) -> Config:
    """The config with the dataset-derived fields filled in; a resumed run's data must still give what the
    checkpoint was trained on."""
    filled = task_cls.configure(copy.deepcopy(cfg), data)
    if ckpt is not None:
        was, now = _flat(cfg.to_dict()), _flat(filled.to_dict())
        changed = [f"{k} {was[k]} -> {now[k]}" for k in was if was[k] != now[k]]
        if changed:
            raise UserError(f"{ckpt.path} was trained on other data than the data now gives: {'; '.join(changed)}")
    return filled


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _wrapper(cfg: Config, dist_info, device):
    """How a task wraps a module for its training step: DDP (which all-reduces gradients in backward) and/or
    torch.compile, both sharing the plain module's weights."""
    def wrap(module):
        if dist_info.enabled:
            module = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
        return torch.compile(module) if cfg.train.compile else module

    return wrap


class LossMeter:
    """Running sums of a task's losses on the device between log records (finite steps only), and images/s.
    Its state travels in checkpoints, so a resumed run writes the same log records."""

    def __init__(self, device: torch.device, ckpt: Checkpoint | None):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor] = {}
        self.images, self.t_last, self.t_start = 0, time.perf_counter(), time.perf_counter()
        state = ckpt.meta.get("log_state", {}) if ckpt is not None else {}
        self.t_start -= float(state.get("seconds", 0.0))
        self._restored = {k[:-4]: (v, int(state.get(k[:-4] + "_n", 0))) for k, v in state.items() if k.endswith("_sum")}

    def add(self, losses: dict[str, torch.Tensor], images: int) -> None:
        for name, value in losses.items():
            if name not in self.sums:
                total, n = self._restored.pop(name, (0.0, 0))
                self.sums[name] = torch.full((), float(total), device=self.device)
                self.counts[name] = torch.full((), n, dtype=torch.long, device=self.device)
            ok = torch.isfinite(value)
            self.sums[name] += torch.where(ok, value, 0.0)
            self.counts[name] += ok
        self.images += images  # the global batch, over all ranks

    def record(self, dist_info, stop: bool) -> tuple[dict, bool]:
        """Mean losses since the last record (over all ranks), images/s and time; and whether any rank stops."""
        names = list(self.sums)
        stats = torch.stack([*(self.sums[n] for n in names), *(self.counts[n].float() for n in names),
                             torch.tensor(float(stop), device=self.device)])
        values = distributed.all_reduce_mean(stats, dist_info).tolist()
        now = time.perf_counter()
        rec = {n: values[i] / values[len(names) + i] for i, n in enumerate(names) if values[len(names) + i]}
        if rec:
            rec.update(img_per_s=self.images / (now - self.t_last), time=now - self.t_start)
        for n in names:
            self.sums[n].zero_()
            self.counts[n].zero_()
        self.images, self.t_last = 0, now
        return rec, values[-1] > 0

    def state(self) -> dict:
        out = {"seconds": self.seconds()}
        for n in self.sums:
            out.update({f"{n}_sum": float(self.sums[n]), f"{n}_n": int(self.counts[n])})
        return out

    def seconds(self) -> float:
        return time.perf_counter() - self.t_start


class Saver:
    """Writes checkpoints of the task's named parts with the loop's state (step, best scores, log sums), never
    with non-finite weights, and remembers the last good one for error messages."""

    def __init__(self, run: RunDir, task: Task, cfg: Config, ckpt: Checkpoint | None, meter: LossMeter):
        self.run, self.task, self.cfg, self.meter = run, task, cfg, meter
        meta = ckpt.meta if ckpt is not None else {}
        self.best_val = meta.get("best_val_loss", math.inf)
        self.best_score = meta.get("best_score")  # best by train.best_metric, across resumes
        self.val = None
        self.last_good = f"{run.last} (step {ckpt.step})" if ckpt is not None else "none was written"

    def is_best(self, metric: str, scores: dict) -> bool:
        if not BEST_METRICS.get(metric).needs_eval:  # val_loss: picked at validation
            return False
        if metric not in scores:
            raise UserError(f"train.best_metric={metric} is not available for this model (unconditional: no class "
                            f"accuracy); use fd_clf, precision or recall")
        up = BEST_METRICS.get(metric, "train.best_metric").higher_is_better
        if self.best_score is None or (scores[metric] > self.best_score if up else scores[metric] < self.best_score):
            self.best_score = scores[metric]
            return True
        return False

    def save(self, path, step: int) -> None:
        modules = self.task.modules()
        if not faults.all_finite(*modules.values()):
            raise UserError(f"training diverged: the weights are not finite at step {step}; stopped without "
                            f"writing {path.name}, keeping the last good checkpoint ({self.last_good}); try a lower "
                            f"--train.lr")
        extra = {"task": self.task.name, **self.task.metadata(), "best_val_loss": self.best_val, "val_loss": self.val,
                 "log_state": self.meter.state()}
        if self.best_score is not None:
            extra["best_score"] = self.best_score
        try:
            save_checkpoint(path, modules=modules, optimizers=self.task.optimizers(), config=self.cfg, step=step,
                            **extra)
        except OSError as e:
            raise UserError(f"could not write checkpoint {path}: {e.strerror or e}; kept the last checkpoint "
                            f"{self.last_good}") from None
        if path == self.run.last:
            self.last_good = f"{self.run.last} (step {step})"
