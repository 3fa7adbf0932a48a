"""The LoRA adapters the server offers: every finished fine-tuning run under --runs and every folder given to
`serve --lora`, each listed for the models whose checkpoint it was trained on (the sha256 its record names)."""
from __future__ import annotations

import functools
from pathlib import Path

from noisecraft.adapters import ADAPTER_DIR, adapter_folder, read_record
from noisecraft.rundir import content_hash, resolve_checkpoint
from noisecraft.serve.paths import find_runs


@functools.lru_cache(maxsize=256)
def _sha256(path: str, mtime_ns: int) -> str:
    return content_hash([Path(path)])  # hashed again only when the checkpoint is rewritten


def offered(runs_root: Path, extra: tuple[str, ...], run_dir: Path) -> dict[str, dict]:
    """{name: {path, sha256, trigger}} of the adapters that fit the served checkpoint of `run_dir`."""
    ckpt = resolve_checkpoint(run_dir, "best")
    sha = _sha256(str(ckpt), ckpt.stat().st_mtime_ns)
    folders = [runs_root / name / ADAPTER_DIR for name in find_runs(runs_root)]
    out = {}
    for folder in [*folders, *(adapter_folder(p) for p in extra)]:
        record = read_record(folder)
        if record is not None and record.get("base_sha256") == sha:
            name = str(record.get("name") or folder.name)
            out[name] = {"path": folder, "sha256": record.get("sha256"), "trigger": record.get("trigger")}
    return out
