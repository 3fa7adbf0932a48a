"""Checkpoints: safetensors for tensors plus JSON metadata. Never pickle.

`<name>.safetensors` holds the weights (`model.*`), the EMA weights (`ema.*`) and the optimizer state
(`optim.*`); its header also carries the metadata JSON, so the one file is complete and is replaced atomically
(temp file, fsync, rename). `<name>.json` is a readable copy of the same metadata.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from noisecraft.config import Config, to_json
from noisecraft.errors import UserError

FORMAT = "noisecraft-checkpoint"
VERSION = 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash at any moment leaves either the old or the new file whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    tensors = {}
    for pid, s in state["state"].items():
        for k, v in s.items():
            tensors[f"optim.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, state["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith("optim."):
            _, pid, k = name.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: Path, *, model: torch.nn.Module, ema: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, config: Config, step: int, **extra: Any) -> None:
    """Write `path` (.safetensors) and its .json sidecar atomically."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    groups = []
    if optimizer is not None:
        opt_tensors, groups = _flatten_optimizer(optimizer.state_dict())
        tensors.update({k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()})
    meta = {"format": FORMAT, "version": VERSION, "step": int(step), "config": config.to_dict(),
            "optimizer_param_groups": groups, **extra}
    text = to_json(meta)  # strict JSON: a best_val_loss of inf (no validation yet) goes out as "inf"
    atomic_write_bytes(path, save(tensors, metadata={"noisecraft": text}))
    atomic_write_bytes(path.with_suffix(".json"), (text + "\n").encode())


def resolve_checkpoint(path: str | Path, prefer: str = "best") -> Path:
    """A run directory, a checkpoints/ directory, or a .safetensors/.json file -> the .safetensors file."""
    p = Path(path)
    if p.is_dir():
        for d in (p / "checkpoints", p):
            for name in (prefer, "last", "best"):
                if (d / f"{name}.safetensors").is_file():
                    return d / f"{name}.safetensors"
        raise UserError(f"no checkpoint found in {p} (expected checkpoints/best.safetensors or last.safetensors)")
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if not p.is_file():
        raise UserError(f"checkpoint not found: {path}")
    return p


def load_checkpoint(path: str | Path, prefer: str = "best") -> tuple[dict[str, torch.Tensor], dict, Config]:
    """Read tensors and validated metadata. Raises UserError for files that are not our checkpoints."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    p = resolve_checkpoint(path, prefer)
    try:
        with safe_open(str(p), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{p} is not a readable safetensors checkpoint ({e})") from None
    try:
        meta = json.loads(header["noisecraft"])
    except (KeyError, json.JSONDecodeError):
        raise UserError(f"{p} is not a noisecraft checkpoint (no metadata)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("step"), int):
        raise UserError(f"{p} is not a noisecraft checkpoint (bad metadata)")
    if meta.get("version", 0) > VERSION:
        raise UserError(f"{p} was written by a newer noisecraft (format version {meta['version']})")
    try:
        config = Config.from_dict(meta.get("config"))
    except UserError as e:
        raise UserError(f"{p} holds an invalid config: {e}") from None
    _validate_meta(p, meta, config)
    meta["path"] = str(p)
    return tensors, meta, config


def _validate_meta(p: Path, meta: dict, config: Config) -> None:
    """Type-check the metadata fields that the trainer and sampler use, before anything reads them."""
    m = config.model
    if m.in_channels <= 0 or m.image_size <= 0 or m.num_classes < 0:
        raise UserError(f"{p} holds an invalid config: model.in_channels/image_size/num_classes are not set")
    names = meta.get("class_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{p} is not a noisecraft checkpoint (bad metadata: class_names)")
    for key in ("best_val_loss", "val_loss", "best_score"):
        if meta.get(key) in ("inf", "-inf", "nan"):  # strict JSON carries non-finite numbers as strings
            meta[key] = float(meta[key])
        if meta.get(key) is not None and not isinstance(meta[key], (int, float)):
            raise UserError(f"{p} is not a noisecraft checkpoint (bad metadata: {key})")
    log_state = meta.get("log_state", {})
    if not isinstance(log_state, dict) or not all(isinstance(v, (int, float)) for v in log_state.values()):
        raise UserError(f"{p} is not a noisecraft checkpoint (bad metadata: log_state)")
    groups = meta.get("optimizer_param_groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise UserError(f"{p} is not a noisecraft checkpoint (bad metadata: optimizer_param_groups)")


def load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, source: str) -> None:
    state = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"{source}: weights do not match the model its config describes ({first})") from None


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    groups = meta.get("optimizer_param_groups") or []
    if not groups:
        raise UserError(f"{meta.get('path')}: holds no optimizer state, so training cannot resume from it")
    try:
        optimizer.load_state_dict(_unflatten_optimizer(tensors, groups))
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{meta.get('path')}: optimizer state does not match the model ({first})") from None
    for group in optimizer.param_groups:
        for param in group["params"]:
            for k, v in optimizer.state.get(param, {}).items():
                if torch.is_tensor(v) and v.dim() > 0 and v.shape != param.shape:
                    raise UserError(f"{meta.get('path')}: optimizer state '{k}' has shape {tuple(v.shape)}, "
                                    f"the weight it belongs to {tuple(param.shape)}")
