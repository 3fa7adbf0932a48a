"""Training a preset through the CLI, as a user types the command, timed whole."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common.machine import capped_env, record


def train_cli(subcommand: str, preset: str, run: str | Path, flags=(), env: dict | None = None,
              quiet: bool = True) -> dict:
    """`noisecraft SUBCOMMAND --preset PRESET --out RUN --no-progress FLAGS` in a fresh process with `env` (default:
    this one's; a kernel cap set there holds for the command), its output dropped when `quiet`: the command as a
    user types it, its whole wall (start-up, data, training, checkpoints, final figures) and its summary's training
    loop seconds, steps and parameters."""
    cmd = [sys.executable, "-m", "noisecraft", subcommand, "--preset", preset, "--out", str(run), "--no-progress",
           *flags]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL if quiet else None)
    wall = time.perf_counter() - t0
    summary = json.loads((Path(run) / "summary.json").read_text())
    return {"command": " ".join(["noisecraft", *cmd[3:]]), "wall_s": round(wall, 1),
            "train_loop_s": round(summary["train_seconds"], 1), "steps": summary["steps"], "params": summary["params"]}


def train_capped(subcommand: str, preset: str, run: str | Path, overrides: dict | None = None,
                 autoencoder: str | None = None) -> dict:
    """A fresh `run` of the preset trained by train_cli in fp32 with the kernels capped to AVX2 (as on a laptop
    without AVX-512), with config `overrides` and, for a latent preset, its `autoencoder` run; what train_cli
    returns, the run, and the machine (the cores this process is pinned to and its OMP_NUM_THREADS, which the
    command inherits)."""
    shutil.rmtree(run, ignore_errors=True)
    flags = ["--train.precision=fp32", *(f"--{k}={v}" for k, v in (overrides or {}).items()),
             *(["--autoencoder", autoencoder] if autoencoder else [])]
    env = capped_env()
    return {"run": str(run), **train_cli(subcommand, preset, run, flags, env, quiet=True),
            "machine": record("fp32", env, pinned_cpus=sorted(os.sched_getaffinity(0)))}
