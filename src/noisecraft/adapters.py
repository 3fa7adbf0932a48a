"""Low-rank adapters (LoRA, Hu et al. 2021) on any of noisecraft's networks, through peft.

An adapter adds to a frozen layer's weight W a product of rank r, W + (alpha / r) B A, on the layers its
architecture registers (`registry.ARCHITECTURES` facts `lora`: attention projections, cross-attention and the
pooled-text projection included; optionally the residual blocks' convolutions or the transformer's MLPs). A
fine-tuning run (`train.finetune`) trains one; this module saves it in peft's own layout

    adapter/adapter_config.json            # peft's LoraConfig: loads with peft directly on the project's network
    adapter/adapter_model.safetensors      # the A and B matrices, peft's key names
    adapter/noisecraft_adapter.json        # its base checkpoint's sha256, trigger, data licence, its own sha256

and loads several onto a pipeline's network at once, each with its scale, merged into the weights (one network
call costs what it did without adapters; scale 0, or none, gives the base's weights bit for bit). The base's
weights on disk are never changed. A1111's `<lora:name:weight>` prompt tags name loaded adapters' scales.
"""
from __future__ import annotations

import copy
import json
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from noisecraft.errors import UserError
from noisecraft.registry import ARCHITECTURES, LORA_TARGETS
from noisecraft.rundir import ADAPTER_DIR, atomic_write_bytes, content_hash

CONFIG_FILE, WEIGHTS_FILE, RECORD_FILE = "adapter_config.json", "adapter_model.safetensors", "noisecraft_adapter.json"
MAX_SCALE = 2.0  # scales are refused outside [-MAX_SCALE, MAX_SCALE]
_TAG = re.compile(r"<lora:([^:<>]+)(?::([^<>]*))?>")


# ---------------------------------------------------------------- building and saving (fine-tuning)


def require_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError:
        raise UserError("LoRA adapters need peft: pip install -e '.[lora]'") from None


def target_pattern(arch: str, targets: str) -> str:
    """The regular expression (peft's `target_modules`, matched against whole module names) of the layers that
    `targets` (registry.LORA_TARGETS) adapts on architecture `arch`."""
    parts = ARCHITECTURES.get(arch, "model.arch").lora
    return "|".join(f"(?:{parts[p]})" for p in LORA_TARGETS.get(targets, "finetune.targets").parts)


def add_lora(net: nn.Module, arch: str, targets: str, rank: int, alpha: float | None = None,
             name: str = "default") -> nn.Module:
    """Inject a trainable LoRA adapter `name` into `net` (in place) and freeze everything else; B starts at zero,
    so the network computes what it did. Refuses a rank <= 0 or larger than an adapted layer."""
    require_peft()
    from peft import LoraConfig, inject_adapter_in_model

    pattern = target_pattern(arch, targets)
    layers = {n: m for n, m in net.named_modules() if re.fullmatch(pattern, n)}
    if not layers:
        raise UserError(f"finetune.targets={targets} adapts no layer of this {arch} network")
    smallest = min(layers.items(), key=lambda kv: min(_width(kv[1])))
    if not 0 < rank <= min(_width(smallest[1])):
        raise UserError(f"the LoRA rank must be between 1 and the narrowest adapted layer's width "
                        f"({smallest[0]}: {min(_width(smallest[1]))}), got {rank}")
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=pattern, lora_dropout=0.0)
    net.requires_grad_(False)
    inject_adapter_in_model(config, net, adapter_name=name)
    for n, p in net.named_parameters():
        p.requires_grad_(f"lora_A.{name}." in n or f"lora_B.{name}." in n)
    return net


def _width(layer: nn.Module) -> tuple[int, int]:
    if isinstance(layer, nn.Conv2d):
        return layer.in_channels, layer.out_channels
    return layer.in_features, layer.out_features


def lora_parameters(net: nn.Module, name: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's weights of a network with LoRA layers, by their module names (what a checkpoint keeps)."""
    return {n: p for n, p in net.named_parameters() if f"lora_A.{name}." in n or f"lora_B.{name}." in n}


class LoraParts(nn.Module):
    """A network's adapter weights as a part a checkpoint saves and loads; the frozen base is left out."""

    def __init__(self, net: nn.Module, name: str = "default"):
        super().__init__()
        self._of = [net]  # a list: not a submodule, so its base weights stay out of this part
        self.adapter = name

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in lora_parameters(self._of[0], self.adapter).items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True, assign: bool = False):
        own = lora_parameters(self._of[0], self.adapter)
        if set(state) != set(own):
            raise RuntimeError(f"adapter weights differ: {sorted(set(state) ^ set(own))[:3]}")
        with torch.no_grad():
            for n, v in state.items():
                own[n].copy_(v)

    def parameters(self, recurse: bool = True):
        return iter(lora_parameters(self._of[0], self.adapter).values())


def save_adapter(net: nn.Module, out: Path, record: dict[str, Any], name: str = "default") -> Path:
    """Write `net`'s adapter `name` in peft's layout into folder `out`, with noisecraft's record beside it."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(net, adapter_name=name)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(out / WEIGHTS_FILE))
    net.peft_config[name].save_pretrained(str(out))  # peft keeps each injected adapter's LoraConfig there
    full = {**record, "sha256": content_hash([out / WEIGHTS_FILE]), "format": "peft-lora"}
    atomic_write_bytes(out / RECORD_FILE, (json.dumps(full, indent=2) + "\n").encode())
    return out


# ---------------------------------------------------------------- reading


@dataclass
class AdapterFile:
    """An adapter read from disk: peft's config and weights, noisecraft's record (empty for a plain peft one)."""

    path: Path
    config: Any  # peft.LoraConfig
    state: dict[str, torch.Tensor]  # peft's keys
    record: dict[str, Any]
    sha256: str

    @property
    def name(self) -> str:
        """The adapter's name: the record's, else its folder's (a fine-tuning run's folder for run/adapter)."""
        folder = self.path.parent if self.path.name == ADAPTER_DIR else self.path
        return str(self.record.get("name") or folder.name)


def adapter_folder(path: str | Path) -> Path:
    """The adapter folder `path` names: the folder itself, or a fine-tuning run's `adapter/`."""
    p = Path(path)
    if (p / ADAPTER_DIR / CONFIG_FILE).is_file() and not (p / CONFIG_FILE).is_file():
        p = p / ADAPTER_DIR
    return p


def read_record(folder: Path) -> dict[str, Any] | None:
    """An adapter folder's noisecraft record, or None when it has none (or it is not JSON)."""
    try:
        record = json.loads((folder / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def read_adapter(path: str | Path) -> AdapterFile:
    """An adapter folder (peft's layout) or a fine-tuning run; a clear UserError when it is neither or is cut."""
    require_peft()
    from peft import LoraConfig
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = adapter_folder(path)
    if not p.exists():
        raise UserError(f"adapter {path} not found")
    if not (p / CONFIG_FILE).is_file() or not (p / WEIGHTS_FILE).is_file():
        raise UserError(f"{path} is not a LoRA adapter in peft's layout ({CONFIG_FILE} and {WEIGHTS_FILE} in one "
                        f"folder, or a noisecraft finetune run)")
    try:
        config = LoraConfig.from_pretrained(str(p))
        record = json.loads((p / RECORD_FILE).read_text()) if (p / RECORD_FILE).is_file() else {}
    except (ValueError, TypeError, OSError) as e:
        raise UserError(f"{p / CONFIG_FILE} is not a readable LoRA config ({str(e).splitlines()[0]})") from None
    try:
        state = load_file(str(p / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{p / WEIGHTS_FILE} is not a readable safetensors file, perhaps truncated ({e})") from None
    if not state:
        raise UserError(f"{p / WEIGHTS_FILE} holds no weights")
    return AdapterFile(p, config, state, record, content_hash([p / WEIGHTS_FILE]))


# ---------------------------------------------------------------- scales and prompt tags


def check_scale(scale: float, what: str = "a LoRA scale") -> float:
    scale = float(scale)
    if not -MAX_SCALE <= scale <= MAX_SCALE:  # NaN fails both
        raise UserError(f"{what} must be a number in [-{MAX_SCALE:g}, {MAX_SCALE:g}], got {scale}")
    return scale


def parse_lora_arg(text: str) -> tuple[str, float]:
    """`PATH[:SCALE]` (the CLI's --lora) -> (path, scale); scale 1 when none is given."""
    path, sep, tail = text.rpartition(":")
    if sep and path:
        try:
            return path, check_scale(float(tail), f"the scale of --lora {text}")
        except ValueError:
            pass
    return text, 1.0


def prompt_loras(prompt: str) -> tuple[str, dict[str, float]]:
    """A1111's `<lora:name:weight>` tags taken out of a prompt: (the prompt without them, {name: weight});
    a tag without a weight means 1."""
    scales: dict[str, float] = {}
    for name, weight in _TAG.findall(prompt):
        try:
            scale = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise UserError(f"<lora:{name}:{weight}>: the weight must be a number") from None
        scales[name.strip()] = check_scale(scale, f"the weight of <lora:{name}>")
    return " ".join(_TAG.sub(" ", prompt).split()), scales


# ---------------------------------------------------------------- applying to a pipeline's network


class Adapters:
    """The adapters loaded on one (plain) network, merged into its weights at their scales. peft builds each
    adapter's layers on a copy of the network and computes their weight deltas (`get_delta_weight`); the network
    itself keeps its own modules, so hooks and figures that name them still work."""

    def __init__(self, net: nn.Module, base_sha256: Callable[[], str | None]):
        self.net, self.base_sha256 = net, base_sha256
        self.files: dict[str, AdapterFile] = {}
        self.scales: dict[str, float] = {}
        self._shadow: nn.Module | None = None  # the network with every loaded adapter's peft layers
        self._base: dict[str, torch.Tensor] = {}  # the base weights of adapted layers, as loaded
        self._applied: dict[str, float] = {}
        self.lock = threading.RLock()  # the server loads adapters while its worker thread draws

    def load(self, path: str | Path, name: str | None = None, scale: float = 1.0) -> str:
        """Load an adapter (refused if made for another base, or not fitting this network); returns its name."""
        with self.lock:
            return self._load(path, name, scale)

    def _load(self, path: str | Path, name: str | None, scale: float) -> str:
        from peft import inject_adapter_in_model, set_peft_model_state_dict

        file = read_adapter(path)
        name = name or file.name
        check_scale(scale, f"the scale of adapter {name}")
        want, have = file.record.get("base_sha256"), self.base_sha256()
        if want and have and want != have:
            raise UserError(f"adapter {file.path} was trained on a base with sha256 {want}, but this checkpoint "
                            f"({have}) is another: load it on the run it was fine-tuned from")
        if name in self.files:
            self.unload(name)
        shadow = self._shadow if self._shadow is not None else copy.deepcopy(self.net).requires_grad_(False)
        try:
            with warnings.catch_warnings():  # peft warns that a second adapter joins the first: here it should
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                inject_adapter_in_model(copy.deepcopy(file.config), shadow, adapter_name=name)
            result = set_peft_model_state_dict(shadow, file.state, adapter_name=name)
        except (ValueError, RuntimeError, KeyError) as e:
            raise UserError(f"adapter {file.path} does not fit this network ({str(e).splitlines()[0]})") from None
        if result.unexpected_keys:
            raise UserError(f"adapter {file.path} does not fit this network (e.g. {result.unexpected_keys[0]})")
        self._shadow, self.files[name], self.scales[name] = shadow, file, scale
        return name

    def set_scales(self, scales: dict[str, float]) -> None:
        """Each named adapter's scale (others keep theirs); a name not loaded is refused."""
        for name, scale in scales.items():
            self.require(name)
            self.scales[name] = check_scale(scale, f"the scale of adapter {name}")

    def require(self, name: str) -> None:
        if name not in self.files:
            loaded = ", ".join(self.files) or "none"
            raise UserError(f"no adapter named '{name}' is loaded (loaded: {loaded})")

    def unload(self, name: str | None = None) -> None:
        """Forget one adapter (or all): the network gets the base's weights back at the next `apply`."""
        with self.lock:
            self._unload(name)

    def _unload(self, name: str | None) -> None:
        names = list(self.files) if name is None else [name]
        for n in names:
            self.require(n)
            del self.files[n], self.scales[n]
        if not self.files:
            self._restore()
            self._shadow, self._applied = None, {}
        elif self._shadow is not None:  # rebuild the copy without it
            kept = [(n, f.path, self.scales[n]) for n, f in self.files.items()]
            self.files, self.scales, self._shadow = {}, {}, None
            for n, p, s in kept:
                self._load(p, n, s)

    def active(self, overrides: dict[str, float] | None = None) -> tuple[tuple[str, str, float], ...]:
        """(name, sha256, scale) of every loaded adapter at its scale, with `overrides` (prompt tags) applied."""
        scales = dict(self.scales)
        for name, scale in (overrides or {}).items():
            self.require(name)
            scales[name] = scale
        return tuple((n, self.files[n].sha256, scales[n]) for n in self.files)

    @torch.no_grad()
    def apply(self, active: tuple[tuple[str, str, float], ...]) -> None:
        """Merge the adapters at the given scales into the network's weights (from the base's, every time)."""
        with self.lock:
            self._apply({n: s for n, _, s in active if s != 0})

    def _apply(self, want: dict[str, float]) -> None:
        if want == self._applied:
            return
        self._restore()
        for path, layer in self._lora_layers():
            delta = sum(s * layer.get_delta_weight(n) for n, s in want.items() if n in layer.lora_A)
            if torch.is_tensor(delta):
                weight = self.net.get_submodule(path).weight
                self._base.setdefault(path, weight.detach().clone())
                weight.add_(delta.to(weight.dtype))
        self._applied = want

    def _lora_layers(self):
        from peft.tuners.lora import LoraLayer

        return [(n, m) for n, m in (self._shadow.named_modules() if self._shadow is not None else [])
                if isinstance(m, LoraLayer)]

    @torch.no_grad()
    def _restore(self) -> None:
        for path, weight in self._base.items():
            self.net.get_submodule(path).weight.copy_(weight)
        self._applied = {}
