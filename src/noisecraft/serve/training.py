"""Training started from the page: `python -m noisecraft train ...` as a child process that writes a normal run
directory under --runs (its output goes to the run's train.log). Stop sends SIGINT, as Ctrl-C does: the trainer
finishes its step, saves `checkpoints/last` and exits; resume runs `train --resume` in the same directory.

Only processes this server started are ever signalled (a pid read from status.json may belong to anyone by now).
Datasets are read only from under the allowed data root.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from noisecraft.config import apply_overrides, preset, resolve_key
from noisecraft.errors import UserError
from noisecraft.registry import DATASETS
from noisecraft.serve.paths import resolve_under, valid_run_name
from noisecraft.rundir import RunDir

# Set by the request's own fields (preset, dataset, data_dir, steps), never through overrides.
_RESERVED = ("data.dataset", "data.data_root", "data.download", "train.steps", "train.device")


class Conflict(UserError):
    """The run exists, is already training, or is not training (the routes answer 409)."""


@dataclass
class TrainRequest:
    name: str
    preset: str = "digits"
    dataset: str | None = None  # None: the preset's
    data_dir: str | None = None  # under the data root; "" or None: the data root itself
    steps: int | None = None
    overrides: dict[str, str] = field(default_factory=dict)  # "section.field" -> value, as --section.field=value


class TrainingManager:
    def __init__(self, runs_root: Path, data_root: Path | None, python: str = sys.executable):
        self.runs_root, self.data_root, self.python = runs_root, data_root, python
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def running(self, name: str) -> bool:
        p = self._procs.get(name)
        return p is not None and p.poll() is None

    def failed_early(self, name: str) -> str | None:
        """The last line of train.log when a process started here exited with an error before the trainer wrote
        status.json (a dataset that would not load, say); else None."""
        p = self._procs.get(name)
        out = self.runs_root / name
        if p is None or p.poll() in (None, 0) or RunDir(out).status_path.is_file():
            return None
        lines = RunDir(out).train_log.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exited with code {p.returncode}"

    def managed(self) -> list[str]:
        return [n for n in self._procs if self.running(n)]

    def start(self, req: TrainRequest) -> dict:
        if not valid_run_name(req.name):
            raise UserError("name must be 1-64 letters, digits, '.', '_' or '-' (not starting with '.')")
        out = self.runs_root / req.name
        if RunDir(out).holds_run():
            raise Conflict(f"run '{req.name}' already exists: resume it, or choose another name")
        args = ["--preset", req.preset, *self._data_args(req), *self._override_args(req)]
        return self._spawn(req.name, ["train", *args, "--out", str(out)])

    def resume(self, name: str, steps: int | None = None) -> dict:
        out = self.runs_root / name
        if not RunDir(out).holds_run():
            raise Conflict(f"run '{name}' has nothing to resume")
        return self._spawn(name, ["train", "--out", str(out), "--resume",
                                  *(["--steps", str(steps)] if steps is not None else [])])

    def stop(self, name: str) -> dict:
        with self._lock:
            p = self._procs.get(name)
            if p is None or p.poll() is not None:
                raise Conflict(f"run '{name}' is not training in this server (only runs started here can be stopped)")
            p.send_signal(signal.SIGINT)  # as Ctrl-C: the trainer saves `last` after its current step
        return {"name": name, "pid": p.pid, "signal": "SIGINT"}

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every training this server started, each keeping its checkpoint."""
        procs = [p for p in self._procs.values() if p.poll() is None]
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()

    # ---- helpers

    def _data_args(self, req: TrainRequest) -> list[str]:
        cfg = preset(req.preset)  # an unknown preset: UserError listing the presets
        dataset = DATASETS.get(req.dataset or cfg.data.dataset, "dataset").name
        args = ["--dataset", dataset]
        if req.data_dir is not None or dataset == "folder":
            if self.data_root is None:
                raise UserError("this server has no data root (start it with --data-root DIR) to read data from")
            path = resolve_under(self.data_root, req.data_dir or "")
            if path is None or not path.is_dir():
                raise UserError(f"data_dir '{req.data_dir}' is not a folder under the data root")
            args += ["--data-root", str(path)]
        elif self.data_root is not None and dataset in ("mnist", "cifar10"):
            args += ["--data-root", str(self.data_root)]
        return args

    def _override_args(self, req: TrainRequest) -> list[str]:
        cfg = preset(req.preset)
        flat = {resolve_key(cfg, k.replace("-", "_")): str(v) for k, v in req.overrides.items()}
        bad = [k for k in flat if k in _RESERVED]
        if bad:
            raise UserError(f"override {bad[0]} is not allowed here; use the request's own fields")
        if req.steps is not None:
            flat["train.steps"] = str(req.steps)
        apply_overrides(cfg, flat)  # a bad key or value: UserError now, not a failed child later
        return [f"--{k}={v}" for k, v in flat.items()]

    def _spawn(self, name: str, argv: list[str]) -> dict:
        out = self.runs_root / name
        with self._lock:
            if self.running(name):
                raise Conflict(f"run '{name}' is already training")
            out.mkdir(parents=True, exist_ok=True)
            with open(RunDir(out).train_log, "ab") as logf:
                cmd = [self.python, "-m", "noisecraft", *argv, "--no-progress"]
                # Its own session: a Ctrl-C in the server's terminal reaches the server, which stops it cleanly.
                p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
            self._procs[name] = p
        return {"name": name, "pid": p.pid, "state": "starting"}
