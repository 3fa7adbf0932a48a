"""What the runs page shows of a run directory: its status, config, curves, sample grids, figures and evaluation
reports, read from the files the trainer and `evaluate` write (see `noisecraft.rundir`, the owner of their layout)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from noisecraft.config import Config
from noisecraft.errors import UserError
from noisecraft.rundir import CHECKPOINT_NAMES, FINAL_GRID, LOG_KINDS, REPORT_JSON, SAMPLES, RunDir, read_log

MAX_POINTS = 2000  # per curve: a long run's log is thinned so the page stays fast
MAX_JSON_BYTES = 4 << 20  # status, config and reports larger than this are not ours
_STEP_GRID = re.compile(r"step_(\d+)\.png")


def read_json(path: Path) -> Any:
    """A small JSON file, or None when it is missing, too large or torn (a run writing it right now)."""
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            return None
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def pid_alive(pid: Any) -> bool | None:
    """Whether a process with this pid exists on this machine (None: no pid recorded)."""
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def checkpoint_meta(path: Path) -> dict:
    """The metadata sidecar of the checkpoint a run serves (best, else last), {} when there is none."""
    ckpt_dir = RunDir(path).ckpt_dir
    return next((m for m in (read_json(ckpt_dir / f"{c}.json") for c in CHECKPOINT_NAMES) if isinstance(m, dict)),
                {})


def image_shape(path: Path, cfg: Config) -> tuple[int, int, int]:
    """(C, H, W) of the images a run draws, from its config; a latent run from before its config recorded the
    decoded channels takes them from its checkpoint's autoencoder record."""
    c, h, w = cfg.image_shape
    if not c:
        c = (checkpoint_meta(path).get("autoencoder") or {}).get("image_channels", 0)
    return c, h, w


def run_summary(root: Path, name: str) -> dict[str, Any]:
    """One line of the runs table: status.json, with whether its process is alive, plus what the config says."""
    path, run = root / name, RunDir(root / name)
    status = read_json(run.status_path) or {}
    state = status.get("state", "unknown")
    alive = pid_alive(status.get("pid")) if state == "running" else None
    out = {"name": name, "state": state, "step": status.get("step"), "total_steps": status.get("total_steps"),
           "images_per_s": status.get("images_per_s"), "started": status.get("started"),
           "updated": status.get("updated"), "error": status.get("error"), "process_gone": alive is False,
           "has_checkpoint": run.last.is_file() or run.best.is_file()}
    try:
        cfg = Config.load(run.config)
    except UserError:
        return out | {"kind": None}
    channels, size, _ = image_shape(path, cfg)  # what the run draws: a latent run's decoded images
    return out | {"kind": cfg.model.conditioning, "task": cfg.train.task, "dataset": cfg.data.dataset,
                  "image_size": size, "channels": channels, "num_classes": cfg.model.num_classes}


def curves(path: Path) -> dict[str, list[dict]]:
    """log.jsonl by kind (train, val, eval), each thinned to at most MAX_POINTS records (the last one kept)."""
    log = RunDir(path).log_path
    records = read_log(log) if log.is_file() else []
    out = {}
    for kind in LOG_KINDS:
        recs = [r for r in records if r["kind"] == kind]
        if len(recs) > MAX_POINTS:
            stride = -(-len(recs) // MAX_POINTS)
            recs = recs[::stride] + ([recs[-1]] if (len(recs) - 1) % stride else [])
        out[kind] = recs
    return out


def sample_grids(path: Path, name: str) -> list[dict[str, Any]]:
    """samples/step_N.png by step, then samples/final.png (step None)."""
    grids = []
    samples = RunDir(path).samples
    if samples.is_dir():
        for f in samples.iterdir():
            m = _STEP_GRID.fullmatch(f.name)
            if m:
                grids.append({"step": int(m.group(1)), "url": file_url(name, f"{SAMPLES}/{f.name}")})
        grids.sort(key=lambda g: g["step"])
        if (samples / FINAL_GRID).is_file():
            grids.append({"step": None, "url": file_url(name, f"{SAMPLES}/{FINAL_GRID}")})
    return grids


def reports(path: Path, name: str) -> list[dict[str, Any]]:
    """Evaluation reports: every report.json directly in the run or one folder down (eval/ by default)."""
    out = []
    for f in sorted([*path.glob(REPORT_JSON), *path.glob(f"*/{REPORT_JSON}")]):
        rel = f.relative_to(path).parent.as_posix()
        md = f.with_suffix(".md")
        out.append({"name": rel if rel != "." else "report", "report": read_json(f),
                    "markdown_url": file_url(name, md.relative_to(path).as_posix()) if md.is_file() else None})
    return out


def run_detail(root: Path, name: str) -> dict[str, Any]:
    """Everything the runs page shows of one run."""
    path, run = root / name, RunDir(root / name)
    figures = sorted(f.name for f in path.glob("*.png"))
    return run_summary(root, name) | {
        "config": read_json(run.config), "curves": curves(path), "grids": sample_grids(path, name),
        "figures": [{"name": f, "url": file_url(name, f)} for f in figures], "reports": reports(path, name),
        "train_log_url": file_url(name, run.train_log.name) if run.train_log.is_file() else None}


def file_url(run: str, rel: str) -> str:
    from urllib.parse import quote

    return "/files/" + quote(f"{run}/{rel}")
