"""Typed run configuration: eight sections (`sections`, `training`), the whole `Config` with its checks across
sections and strict JSON (`schema`, `jsonio`), `--key=value` overrides (`overrides`) and the presets (`presets`).

This package must not import torch: the CLI parses and validates a config before any heavy import.
"""
from noisecraft.config.jsonio import json_safe, to_json
from noisecraft.config.overrides import apply_overrides, resolve_key
from noisecraft.config.presets import EMOJI_PRESET_EXCLUDE, PRESETS, preset
from noisecraft.config.schema import Config, field_docs
from noisecraft.config.sections import (ARCH_SETTINGS, DataConfig, DiffusionConfig, DiTConfig, ModelConfig,
                                        UNetConfig)
from noisecraft.config.training import (POSTHOC_SIGMA_MAX, AutoencoderConfig, DistillConfig, FinetuneConfig,
                                        SampleConfig, TrainConfig)

__all__ = ["ARCH_SETTINGS", "AutoencoderConfig", "Config", "DataConfig", "DiffusionConfig", "DiTConfig",
           "DistillConfig", "EMOJI_PRESET_EXCLUDE", "FinetuneConfig", "ModelConfig", "POSTHOC_SIGMA_MAX", "PRESETS",
           "SampleConfig", "TrainConfig", "UNetConfig", "apply_overrides", "field_docs", "json_safe", "preset",
           "resolve_key", "to_json"]
