"""The whole config: its eight sections, checks across them, and strict JSON load/save."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noisecraft.config.jsonio import json_safe, to_json
from noisecraft.config.overrides import set_fields, with_saved_defaults
from noisecraft.config.sections import ARCH_SETTINGS, DataConfig, DiffusionConfig, ModelConfig
from noisecraft.config.training import (AutoencoderConfig, DistillConfig, FinetuneConfig, SampleConfig,
                                        TrainConfig)
from noisecraft.errors import UserError


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images a model of this config draws: what the network sees in pixel space, or the
        decoded images of a latent run (data.image_size; channels as recorded from its autoencoder, or 0 when a
        run from before that record did not say)."""
        m = self.model
        if not self.autoencoder.latent:
            return (m.in_channels, m.image_size, m.image_size)
        size = self.data.image_size or m.image_size
        return (self.autoencoder.image_channels, size, size)

    def to_dict(self) -> dict[str, Any]:
        """Every field, as strict JSON takes it (an open guidance interval's inf becomes "inf"); of the architectures'
        settings only the chosen one's (`model.unet` or `model.dit`)."""
        d = dataclasses.asdict(self)
        d["model"] = {k: v for k, v in d["model"].items() if k not in ARCH_SETTINGS or k == self.model.arch}
        return json_safe(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """The config of a saved dict (a run's config.json, a checkpoint's); old keys are read by `set_fields`."""
        if not isinstance(d, dict):
            raise UserError("config must be a JSON object")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise UserError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        cfg = cls()
        set_fields(cfg, with_saved_defaults(_dotted(d)), saved=True)
        cfg.validate()
        return cfg

    def save(self, path: str | Path) -> None:
        # Write-then-rename: a run killed mid-save must not leave a torn config.json behind for --resume.
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(to_json(self.to_dict()) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise UserError(f"config file {path} is not valid JSON: {e}") from None

    def validate(self) -> None:
        """Each section's own checks, then those that join sections."""
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()
        d = self.data
        if self.model.text_encoder and d.captions == "off":
            raise UserError("model.text_encoder needs captions: drop --data.captions=off")
        if d.augment and self.train.task == "autoencoder":
            raise UserError("data.augment conditions a diffusion model on its transforms; an autoencoder run has no "
                            "such conditioning: drop --data.augment")
        if d.recolour and d.captions == "off" and self.train.task != "autoencoder":
            raise UserError("data.recolour tells a model the copies' colours through their captions; without captions "
                            "it would learn the recoloured copies as real colours: drop --data.recolour or turn "
                            "captions on")
        if d.augment and self.autoencoder.latent:
            raise UserError("data.augment transforms pixels, but latent diffusion trains on latents encoded once: "
                            "drop --data.augment or train in pixel space")


def _dotted(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"dit": {"width": 64}}} -> {"model.dit.width": 64}: a saved config's values by their override keys."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_dotted(value, f"{prefix}{key}."))
        elif not prefix:
            raise UserError(f"config section '{key}' must be an object")
        else:
            out[f"{prefix}{key}"] = value
    return out


def field_docs(section: type) -> dict[str, str]:
    """The documentation of each field of a config dataclass: the comment lines right above it, then the comment at
    the end of its line. Field comments are the config's documentation (the reference pages are generated from
    them, and a test requires one for every field), so they are read from the source rather than written twice."""
    import inspect
    import io
    import tokenize

    names, docs, above = {f.name for f in dataclasses.fields(section)}, {}, []
    for line in inspect.getsource(section).splitlines():
        code = line.strip()
        if code.startswith("#"):
            above.append(code.lstrip("#").strip())
            continue
        name = code.split(":", 1)[0]
        if name in names:
            tokens = tokenize.generate_tokens(io.StringIO(code + "\n").readline)
            trailing = [t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT]
            docs[name] = " ".join(above + trailing).strip()
        above = []
    return docs
