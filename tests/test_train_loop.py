"""The task-based training loop: a second task (a toy autoencoder against a discriminator, two optimizers) runs and
resumes exactly through the same loop; run directories refuse, overwrite or resume as asked; every log record
has a kind; status.json follows the run; checkpoints written by noisecraft 0.1 still load."""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import TINY, strict_json
from noisecraft.registry import TASKS, Entry
from noisecraft.train.task import EMA, StepResult, Task, TaskContext, adamw, optimizer_step

FIXTURE = Path(__file__).parent / "fixtures" / "v1_run"


class ToyAutoencoder(Task):
    """A conv autoencoder trained on L1 + a hinge adversarial term against a patch discriminator: two modules
    trained by two optimizers, plus an EMA copy; nothing the loop was written for."""

    name = "toy-autoencoder"

    def __init__(self, cfg, ctx: TaskContext):
        super().__init__(cfg, ctx)
        c = cfg.model.in_channels
        self.ae = nn.Sequential(nn.Conv2d(c, 8, 3, 2, 1), nn.SiLU(), nn.ConvTranspose2d(8, c, 4, 2, 1)).to(ctx.device)
        self.disc = nn.Sequential(nn.Conv2d(c, 8, 4, 2, 1), nn.SiLU(), nn.Conv2d(8, 1, 3, 1, 1)).to(ctx.device)
        self.ema = EMA(self.ae, cfg.train.ema_decay)
        self.opt_ae, self.opt_disc = adamw(self.ae, cfg, ctx.device), adamw(self.disc, cfg, ctx.device)

    @classmethod
    def configure(cls, cfg, data):
        cfg.model.in_channels, cfg.model.image_size = data.channels, data.image_size
        return cfg

    def modules(self):
        return {"autoencoder": self.ae, "autoencoder_ema": self.ema.module, "discriminator": self.disc}

    def optimizers(self):
        return {"autoencoder": self.opt_ae, "discriminator": self.opt_disc}

    def step(self, batch, step):
        x, _ = batch  # (B, C, H, W) in [-1, 1]
        x = x + 0.01 * torch.randn_like(x)  # the loop seeds the RNG per step: this must replay exactly on resume
        rec = self.ae(x)
        l1 = (rec - x).abs().mean()
        g_adv = -self.disc(rec).mean()
        ok_ae = optimizer_step(self.opt_ae, l1 + 0.01 * g_adv, self.ae.parameters(), self.cfg.train.grad_clip)
        d_loss = F.relu(1 - self.disc(x)).mean() + F.relu(1 + self.disc(rec.detach())).mean()
        ok_d = optimizer_step(self.opt_disc, d_loss, self.disc.parameters(), self.cfg.train.grad_clip)
        self.ema.update(self.ae, step)
        return StepResult({"rec": l1.detach(), "d_loss": d_loss.detach()}, ok_ae & ok_d)

    @torch.no_grad()
    def validation_loss(self, data):
        x = data.images[:64].float() / 127.5 - 1
        return float((self.ema.module(x) - x).abs().mean())


@pytest.fixture
def toy_task(monkeypatch):
    monkeypatch.setitem(TASKS._entries, "toy-autoencoder", Entry("toy-autoencoder", f"{__name__}:ToyAutoencoder"))
    return ["--train.task=toy-autoencoder", "--train.lr=3e-3", "--train.precision=fp32", "--train.final_figures=false",
            "--no-progress", *TINY]


def _records(run: Path) -> list[dict]:
    """The log without wall-clock fields, each line parsed strictly (records of 0.1 get their kind by keys)."""
    from noisecraft.rundir import read_log

    for line in (run / "log.jsonl").read_text().splitlines():
        strict_json(line)
    return [{k: v for k, v in r.items() if k not in ("time", "img_per_s")} for r in read_log(run / "log.jsonl")]


def test_a_second_task_trains_and_resumes_exactly_through_the_same_loop(cli, tmp_path, toy_task):
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    assert cli("train", "--out", whole, "--steps", 30, *toy_task)[0] == 0
    assert cli("train", "--out", halves, "--steps", 14, *toy_task)[0] == 0
    code, _, err = cli("train", "--out", halves, "--steps", 30, "--resume", "--no-progress")
    assert code == 0, err

    from noisecraft.checkpoint import load_checkpoint

    a, b = load_checkpoint(whole, prefer="last"), load_checkpoint(halves, prefer="last")
    assert a.meta["modules"] == ["autoencoder", "autoencoder_ema", "discriminator"]
    assert sorted(a.meta["optimizers"]) == ["autoencoder", "discriminator"] and a.meta["task"] == "toy-autoencoder"
    assert a.tensors.keys() == b.tensors.keys()
    assert any(k.startswith("optimizer.discriminator.") for k in a.tensors)
    for k in a.tensors:  # same seed, same steps: bit-identical on CPU, both optimizers' moments included
        assert torch.equal(a.tensors[k], b.tensors[k]), k
    assert _records(whole) == _records(halves)
    train = [r for r in _records(whole) if r["kind"] == "train"]
    assert set(train[0]) >= {"rec", "d_loss", "lr"}
    assert train[-1]["rec"] < 0.7 * train[0]["rec"]  # the reconstruction loss falls on the real digits
    status = strict_json((whole / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 30 and status["task"] == "toy-autoencoder"


def test_every_log_record_has_a_kind_and_status_follows_the_run(cli, tmp_path, monkeypatch):
    import noisecraft.train.task as task_mod

    seen, real = [], task_mod.ema_update

    def spy(*args):  # read status.json mid-run, after the first log record (log_every=2)
        if (tmp_path / "run" / "log.jsonl").stat().st_size and not seen:
            seen.append(strict_json((tmp_path / "run" / "status.json").read_text()))
        return real(*args)

    monkeypatch.setattr(task_mod, "ema_update", spy)
    code, _, err = cli("train", "--out", tmp_path / "run", "--steps", 6, "--no-progress", "--train.eval_every=6",
                       "--train.eval_n=10", "--train.eval_steps=1", "--train.final_figures=false", *TINY)
    assert code == 0, err
    kinds = [r["kind"] for r in _records(tmp_path / "run")]
    assert set(kinds) == {"train", "val", "eval"}
    assert seen[0]["state"] == "running" and seen[0]["step"] == 2 and seen[0]["total_steps"] == 6
    assert seen[0]["pid"] == os.getpid()
    final = strict_json((tmp_path / "run" / "status.json").read_text())
    assert final["state"] == "finished" and final["step"] == 6 and final["started"] == seen[0]["started"]
    assert final["updated"] >= final["started"]


def test_status_says_interrupted_and_failed(cli, tmp_path, monkeypatch):
    import noisecraft.train.diffusion as diffusion_mod
    import noisecraft.train.task as task_mod

    real, calls = task_mod.ema_update, {"n": 0}

    def ctrl_c_at_step_3(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(task_mod, "ema_update", ctrl_c_at_step_3)
    assert cli("train", "--out", tmp_path / "a", "--steps", 20, "--no-progress", *TINY)[0] == 130
    status = strict_json((tmp_path / "a" / "status.json").read_text())
    assert status["state"] == "interrupted" and status["step"] == 3 and "SIGINT at step 3" in status["error"]

    monkeypatch.setattr(task_mod, "ema_update", real)
    nan_loss = diffusion_mod.diffusion_loss
    monkeypatch.setattr(diffusion_mod, "diffusion_loss", lambda *a, **k: nan_loss(*a, **k) * float("nan"))
    code, _, err = cli("train", "--out", tmp_path / "b", "--steps", 20, "--train.max_nonfinite_steps=2",
                       "--no-progress", *TINY)
    assert code == 2 and "diverged" in err
    status = strict_json((tmp_path / "b" / "status.json").read_text())
    assert status["state"] == "failed" and status["error"].startswith("training diverged")


def _dead_run(out: Path) -> None:
    """What `kill -9` before the first checkpoint leaves: config.json, a log and a status that says running."""
    out.mkdir(parents=True)
    shutil.copy(FIXTURE / "config.json", out / "config.json")
    (out / "log.jsonl").write_text('{"step": 2, "loss": 0.5}\n{"step": 4, "loss": 0.4}\n')
    (out / "samples").mkdir()
    (out / "samples" / "step_00000004.png").write_bytes(b"stale")


def test_a_run_directory_that_holds_a_run_refuses_a_new_run(cli, tmp_path):
    _dead_run(tmp_path / "run")
    code, _, err = cli("train", "--out", tmp_path / "run", "--steps", 4, "--no-progress", *TINY)
    assert code == 2 and "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (tmp_path / "run" / "log.jsonl").read_text().count("\n") == 2  # untouched
    code, _, err = cli("train", "--out", tmp_path / "run", "--resume", "--overwrite")
    assert code == 2 and "not both" in err


def test_overwrite_starts_from_a_clean_directory(cli, tmp_path):
    run = tmp_path / "run"
    _dead_run(run)
    (run / "notes.txt").write_text("mine")  # not a run file: kept
    (run / "photo.png").write_bytes(b"mine")  # nor a user's images and captions beside it
    (run / "metadata.jsonl").write_text('{"file_name": "photo.png", "text": "mine"}\n')
    code, _, err = cli("train", "--out", run, "--steps", 4, "--overwrite", "--train.final_figures=false",
                       "--no-progress", *TINY)
    assert code == 0, err
    assert [(r["kind"], r["step"]) for r in _records(run) if r["kind"] == "train"] == [("train", 2), ("train", 4)]
    assert not (run / "samples" / "step_00000004.png").exists() and (run / "notes.txt").read_text() == "mine"
    assert (run / "photo.png").read_bytes() == b"mine" and "mine" in (run / "metadata.jsonl").read_text()
    assert "--overwrite: removed" in err and "photo.png" not in err


def test_resume_without_a_checkpoint_starts_from_step_0_with_a_clean_log(cli, tmp_path):
    _dead_run(tmp_path / "run")
    with pytest.warns(UserWarning, match="no checkpoint yet"):
        code, _, err = cli("train", "--out", tmp_path / "run", "--resume", "--steps", 2, "--no-progress")
    assert code == 0, err
    assert [(r["kind"], r["step"]) for r in _records(tmp_path / "run")] == [("train", 1), ("train", 2), ("val", 2)]


def test_restarting_a_run_killed_before_its_first_checkpoint_is_refused(tmp_path):
    """The measured bug: the same command again appended to the dead run's log (steps 2, 4, 6, 2, 4, ...)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "noisecraft", "train", "--out", str(out), "--steps", "100000", "--no-progress",
           *TINY, "--train.ckpt_every=100000", "--train.val_every=100000"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not ((out / "log.jsonl").exists() and (out / "log.jsonl").stat().st_size) and time.time() - t0 < 90:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert strict_json((out / "status.json").read_text())["state"] == "running"  # SIGKILL leaves no word
    before = (out / "log.jsonl").read_text()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)  # the same command again
    assert p.returncode == 2 and "already holds a run" in p.stderr and "--overwrite" in p.stderr
    assert (out / "log.jsonl").read_text() == before


def test_a_checkpoint_of_noisecraft_0_1_still_resumes_and_informs(cli, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(FIXTURE, run)
    code, out, err = cli("info", "--checkpoint", run)
    assert code == 0, err
    info = json.loads(out)
    assert info["step"] == 2 and info["task"] == "diffusion" and info["parts"] == ["net", "net_ema"]
    code, _, err = cli("train", "--out", run, "--resume", "--steps", 4, "--no-progress")
    assert code == 0, err
    from noisecraft.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run, prefer="last")
    assert ckpt.step == 4 and ckpt.meta["version"] == 2 and ckpt.meta["modules"] == ["net", "net_ema"]
    assert [r["step"] for r in _records(run) if r["kind"] == "train"] == [1, 2, 3, 4]  # old records kept, read by keys


def test_a_checkpoint_with_the_u_net_era_part_names_loads_under_the_new_ones(tmp_path):
    """Parts were `unet`, `unet_ema`, `unet_phemaK` and optimizer `unet` before a DiT could be the network: such a
    file loads as `net`, `net_ema`, ... with the same tensors, and its optimizer state restores."""
    from safetensors.torch import load_file, save

    from noisecraft.checkpoint import load_checkpoint, save_checkpoint
    from noisecraft.config import Config
    from noisecraft.models import build_model

    cfg = Config.load(FIXTURE / "config.json")
    net = build_model(cfg.model)
    opt = adamw(net, cfg, torch.device("cpu"))
    net(torch.randn(2, 1, 28, 28), torch.ones(2), class_labels=torch.tensor([1, 2])).square().mean().backward()
    opt.step()
    new = tmp_path / "new.safetensors"
    copies = {name: copy.deepcopy(net) for name in ("net_ema", "net_phema0")}
    save_checkpoint(new, modules={"net": net, **copies}, optimizers={"net": opt},
                    config=cfg, step=3)
    meta = json.loads(new.with_suffix(".json").read_text())
    old_names = {"net": "unet", "net_ema": "unet_ema", "net_phema0": "unet_phema0"}
    tensors = {}
    for key, value in load_file(str(new)).items():
        head, rest = key.split(".", 1)
        if head == "optimizer":
            name, rest = rest.split(".", 1)
            tensors[f"optimizer.{old_names[name]}.{rest}"] = value
        else:
            tensors[f"{old_names[head]}.{rest}"] = value
    meta["modules"] = sorted(old_names[m] for m in meta["modules"])
    meta["optimizers"] = {old_names[k]: g for k, g in meta["optimizers"].items()}
    old = tmp_path / "old.safetensors"
    old.write_bytes(save(tensors, metadata={"noisecraft": json.dumps(meta)}))
    a, b = load_checkpoint(new), load_checkpoint(old)
    assert b.meta["modules"] == ["net", "net_ema", "net_phema0"] and list(b.meta["optimizers"]) == ["net"]
    assert a.tensors.keys() == b.tensors.keys() and all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    fresh = build_model(cfg.model)
    b.load_module("net_ema", fresh)
    assert all(torch.equal(x, y) for x, y in zip(fresh.parameters(), net.parameters()))
    b.load_optimizer("net", adamw(fresh, cfg, torch.device("cpu")))


def test_learning_rate_schedules():
    from noisecraft.config import apply_overrides, preset
    from noisecraft.train.loop import lr_at

    tc = apply_overrides(preset("digits"), {"train.steps": 500, "train.warmup_steps": 100, "train.lr": 1e-3}).train
    assert lr_at(0, tc) == pytest.approx(1e-5) and lr_at(99, tc) == lr_at(400, tc) == pytest.approx(1e-3)
    tc.lr_schedule = "cosine"
    assert lr_at(99, tc) == pytest.approx(1e-3) and lr_at(300, tc) == pytest.approx(5e-4)
    assert 0 < lr_at(499, tc) < 1e-6  # decays to 0 at the last step


def test_training_asks_for_figures_and_metrics_through_its_hooks(tmp_path, tiny_args):
    import ast

    from noisecraft.config import apply_overrides, preset
    from noisecraft.train import train
    from noisecraft.train.task import Hooks

    src = Path(__file__).parents[1] / "src" / "noisecraft" / "train"
    for f in src.glob("*.py"):  # the loop and its tasks import neither explain nor evaluate
        names = [n.module for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.ImportFrom) and n.module]
        assert not [m for m in names if m.startswith(("noisecraft.explain", "noisecraft.evaluate"))], f.name
    asked = []
    hooks = Hooks(figure=lambda pipe, name, path, **o: asked.append(("figure", name, Path(path).name, o["n"])),
                  metrics=lambda pipe: asked.append(("metrics", pipe.kind)) or {"fd_clf": 1.0, "class_accuracy": 0.5},
                  plot_metrics=lambda records, path: asked.append(("plot", len(records))))
    cfg = apply_overrides(preset("digits"), {"train.steps": 2, "train.eval_every": 2,
                                             **dict(a[2:].split("=", 1) for a in tiny_args),
                                             "train.final_figures": "true"})
    train(cfg, tmp_path / "run", progress=False, hooks=hooks)
    assert asked == [("metrics", "class"), ("plot", 1), ("figure", "forward", "forward_process.png", 4),
                     ("figure", "reverse", "reverse_process.png", 4)]
