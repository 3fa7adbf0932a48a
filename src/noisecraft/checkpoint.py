"""Checkpoints: safetensors for tensors plus JSON metadata. Never pickle.

`<name>.safetensors` holds named parts: each module's weights under its name (`net.*`, `net_ema.*`,
`autoencoder.*`, `discriminator.*`, ...) and each optimizer's state under `optimizer.<name>.*`; its header also
carries the metadata JSON, so the one file is complete and is replaced atomically (temp file, fsync, rename). `<name>.json` is a readable copy of the same metadata.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from noisecraft.config import Config, to_json
from noisecraft.errors import UserError
from noisecraft.rundir import atomic_write_bytes, content_hash, resolve_checkpoint

FORMAT = "noisecraft-checkpoint"
VERSION = 2  # 2: named parts (modules and optimizers by name); 1: model./ema./optim. (still read)


OPTIM = "optimizer"  # tensor-key prefix of optimizer states: optimizer.<name>.<param index>.<state key>
# Format 1 (noisecraft 0.1) wrote one network with fixed prefixes; they are read as these named parts.
V1_PARTS = {"model": "unet", "ema": "unet_ema", "optim": f"{OPTIM}.unet"}
# A diffusion network's parts were named for the U-Net before a DiT could be one (unet, unet_ema, unet_phemaK and the
# optimizer unet): read under the names that fit every architecture.
OLD_NET = "unet"


def _part_name(name: str) -> str:
    return "net" + name[len(OLD_NET):] if name == OLD_NET or name.startswith(OLD_NET + "_") else name


def _rename_old_parts(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, torch.Tensor]:
    """unet.* -> net.*, unet_ema.* -> net_ema.*, unet_phemaK.* -> net_phemaK.*, optimizer.unet.* -> optimizer.net.*"""
    out = {}
    for key, value in tensors.items():
        if key.startswith(f"{OPTIM}."):
            _, name, rest = key.split(".", 2)
            out[f"{OPTIM}.{_part_name(name)}.{rest}"] = value
        else:
            name, _, rest = key.partition(".")
            out[f"{_part_name(name)}.{rest}"] = value
    meta["modules"] = [_part_name(m) for m in meta["modules"]]
    meta["optimizers"] = {_part_name(k): g for k, g in meta["optimizers"].items()}
    return out


def _flatten_optimizer(name: str, state: dict) -> dict[str, torch.Tensor]:
    tensors = {}
    for pid, s in state["state"].items():
        for k, v in s.items():
            tensors[f"{OPTIM}.{name}.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors


def save_checkpoint(path: Path, *, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], config: Config, step: int, **extra: Any) -> None:
    """Write `path` (.safetensors) and its .json sidecar atomically: every module's weights under its name
    (`net.*`, `net_ema.*`, ...) and every optimizer's state under `optimizer.<name>.*`."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {}
    for name, module in modules.items():
        tensors.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
    for name, optimizer in optimizers.items():
        tensors.update(_flatten_optimizer(name, optimizer.state_dict()))
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"format": FORMAT, "version": VERSION, "step": int(step), "config": config.to_dict(),
            "modules": sorted(modules), "optimizers": {n: o.state_dict()["param_groups"] for n, o in optimizers.items()},
            **extra}
    text = to_json(meta)  # strict JSON: a best_val_loss of inf (no validation yet) goes out as "inf"
    atomic_write_bytes(path, save(tensors, metadata={"noisecraft": text}))
    atomic_write_bytes(path.with_suffix(".json"), (text + "\n").encode())


def _upgrade_v1(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, torch.Tensor]:
    """Format 1 -> named parts: model./ema./optim. become unet./unet_ema./optimizer.unet. (same tensors)."""
    out = {}
    for key, value in tensors.items():
        prefix, _, rest = key.partition(".")
        out[f"{V1_PARTS.get(prefix, prefix)}.{rest}"] = value
    meta["modules"] = ["unet", "unet_ema"]
    groups = meta.pop("optimizer_param_groups", None) or []
    meta["optimizers"] = {"unet": groups} if groups else {}
    return out


@dataclass
class Checkpoint:
    """A loaded checkpoint: its tensors by name, validated metadata and config. Parts are restored by name."""

    path: Path
    tensors: dict[str, torch.Tensor]
    meta: dict
    config: Config

    @property
    def step(self) -> int:
        return self.meta["step"]

    def has(self, name: str) -> bool:
        return name in self.meta["modules"]

    def load_module(self, name: str, module: torch.nn.Module) -> torch.nn.Module:
        """Load part `name` into `module` (strict: every weight must match the config's model)."""
        if not self.has(name):
            raise UserError(f"{self.path} holds no part '{name}' (it holds {', '.join(self.meta['modules'])})")
        state = {k[len(name) + 1:]: v for k, v in self.tensors.items() if k.startswith(name + ".")}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise UserError(f"{self.path}: weights do not match the model its config describes ('{name}': "
                            f"{first})") from None
        return module

    def load_optimizer(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        groups = self.meta["optimizers"].get(name)
        if not groups:
            raise UserError(f"{self.path}: holds no optimizer state for '{name}', so training cannot resume from it")
        prefix = f"{OPTIM}.{name}."
        state: dict[int, dict] = {}
        for key, v in self.tensors.items():
            if key.startswith(prefix):
                pid, k = key[len(prefix):].split(".", 1)
                state.setdefault(int(pid), {})[k] = v
        try:
            optimizer.load_state_dict({"state": state, "param_groups": groups})
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{self.path}: optimizer state of '{name}' does not match the model ({first})") from None
        for group in optimizer.param_groups:
            for param in group["params"]:
                for k, v in optimizer.state.get(param, {}).items():
                    if torch.is_tensor(v) and v.dim() > 0 and v.shape != param.shape:
                        raise UserError(f"{self.path}: optimizer state '{k}' of '{name}' has shape "
                                        f"{tuple(v.shape)}, the weight it belongs to {tuple(param.shape)}")


def load_checkpoint(path: str | Path, prefer: str = "best") -> Checkpoint:
    """Read tensors and validated metadata (format 1 or 2). Raises UserError for files that are not ours."""
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
    if meta.get("version", 1) == 1:
        tensors = _upgrade_v1(tensors, meta)
    try:
        config = Config.from_dict(meta.get("config"))
    except UserError as e:
        raise UserError(f"{p} holds an invalid config: {e}") from None
    _validate_meta(p, meta, config)
    if any(_part_name(m) != m for m in meta["modules"]):
        tensors = _rename_old_parts(tensors, meta)
    meta["path"] = str(p)
    return Checkpoint(p, tensors, meta, config)


def load_recorded(path: str | None, sha256: str, role: str, run: str, flag: str) -> Checkpoint:
    """The checkpoint a derived run started from (a distillation's teacher, a fine-tuning's base), recorded by path
    and sha256: refused when none is recorded, when the file is gone, or when it changed since (`role` names it,
    `run` names the derived run, `flag` the config key that records it)."""
    if not path:
        raise UserError(f"{run} needs {flag}: start it with its command's --checkpoint RUN")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"the {role} checkpoint {p} is gone: a {run} needs its {role} to go on")
    if sha256 and content_hash([p]) != sha256:
        raise UserError(f"the {role} checkpoint {p} changed since this {run} started (sha256 {sha256[:12]} -> "
                        f"{content_hash([p])[:12]}): start a new run from the new {role}")
    return load_checkpoint(p)


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
    modules, optimizers = meta.get("modules"), meta.get("optimizers")
    if not isinstance(modules, list) or not all(isinstance(n, str) for n in modules):
        raise UserError(f"{p} is not a noisecraft checkpoint (bad metadata: modules)")
    if not isinstance(optimizers, dict) or not all(
            isinstance(g, list) and all(isinstance(x, dict) for x in g) for g in optimizers.values()):
        raise UserError(f"{p} is not a noisecraft checkpoint (bad metadata: optimizers)")
