"""Data-parallel training: 2 CPU processes (torchrun, gloo) follow the trajectory of 1 process with the same
global batch (and of a 1-process run stopped and resumed half way)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from noisecraft.cli import main

# 8 images per global batch: 4 per rank. Dropout off: nn.Dropout masks are drawn per rank, not sliced.
ARGS = [
    "--model.unet.base_channels=8", "--model.unet.channel_mult=1,2", "--model.unet.num_res_blocks=1",
    "--model.unet.attn_resolutions=14",
    "--model.head_channels=8", "--model.dropout=0", "--train.batch_size=8", "--train.log_every=1",
    "--train.val_every=2", "--train.ckpt_every=2", "--train.sample_every=100000", "--data.val_size=16",
    "--sample.steps=2", "--train.warmup_steps=1", "--train.precision=fp32", "--train.final_figures=false",
    "--no-progress",
]


def _losses(run_dir) -> tuple[dict[int, float], dict[int, float]]:
    train, val = {}, {}
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            train[rec["step"]] = rec["loss"]
        if "val_loss" in rec:
            val[rec["step"]] = rec["val_loss"]
    return train, val


def _torchrun(*argv, nproc: int = 2) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "noisecraft", *map(str, argv)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def _assert_close(a: dict[int, float], b: dict[int, float], rtol: float) -> None:
    assert a.keys() == b.keys() and a
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=rtol), (step, a[step], b[step])


def test_two_gloo_processes_match_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    # 2 processes (gloo), 4 images each, from scratch to step 8.
    proc = _torchrun("train", "--out", two, "--steps", "8", "--device", "cpu", *ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"steps": 8') == 1  # only rank 0 reports
    # 1 process, 8 images: 4 steps, then resumed to 8 (in-process, through the CLI).
    assert main(["train", "--out", str(one), "--steps", "4", "--device", "cpu", *ARGS]) == 0
    assert main(["train", "--out", str(one), "--steps", "8", "--resume", "--device", "cpu", "--no-progress"]) == 0

    train1, val1 = _losses(one)
    train2, val2 = _losses(two)
    assert sorted(train2) == list(range(1, 9)) and sorted(val2) == [2, 4, 6, 8]
    # Same data, same noise, gradients averaged over ranks: equal up to float reduction order (amplified a
    # little by Adam's normalisation); a rank drawing its own noise would be off by tens of percent per step.
    _assert_close(train1, train2, rtol=1e-2)
    _assert_close(val1, val2, rtol=1e-2)

    w1 = load_file(str(one / "checkpoints" / "last.safetensors"))
    w2 = load_file(str(two / "checkpoints" / "last.safetensors"))
    assert w1.keys() == w2.keys()
    for k in w1:
        if k.startswith(("net.", "net_ema.")):
            assert (w1[k] - w2[k]).abs().max() < 1e-2, k  # a few Adam steps of lr 1e-3 apart at most
