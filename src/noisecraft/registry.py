"""One registry per concept: the names users may choose (samplers, datasets, presets, precisions, best-metrics,
training tasks) and what each needs. Config validation, the CLI's choices and `--help` read them from here, so
a name is written once.

Registries hold names and facts, not behaviour: an entry points at its implementation by import path
("module:attribute"), loaded on first use, so this module (and `config`, which validates against it) never
imports torch.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, TypeVar

from noisecraft.errors import UserError


@dataclass(frozen=True)
class Entry:
    """A registered name: where its implementation lives, a one-line help text, and facts about it."""

    name: str
    target: str | None = None  # "package.module:attribute", imported by `load()`; None for plain names
    help: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        if self.target is None:
            raise ValueError(f"'{self.name}' has no implementation to load")
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def __getattr__(self, key: str) -> Any:  # entry.grid, entry.calls_per_step, ...
        facts = self.__dict__.get("facts", {})
        if key in facts:
            return facts[key]
        raise AttributeError(key)


E = TypeVar("E", bound=Entry)


class Registry(Generic[E]):
    """Names of one concept, in registration order. `get` on an unknown name raises a UserError that lists the
    valid ones (the CLI prints it as its `error:` line)."""

    def __init__(self, concept: str):
        self.concept = concept
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, target: str | None = None, help: str = "", **facts: Any) -> Entry:
        if name in self._entries:
            raise ValueError(f"{self.concept} '{name}' is registered twice")
        entry = Entry(name, target, help, facts)
        self._entries[name] = entry
        return entry

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str, what: str | None = None) -> Entry:
        """The entry called `name`; `what` names the setting in the error (e.g. "sample.sampler")."""
        if name not in self._entries:
            raise UserError(f"{what or self.concept} must be one of {', '.join(self._entries)}; got '{name}'")
        return self._entries[name]

    def load(self, name: str) -> Any:
        """The implementation registered as `name` (imported now)."""
        return self.get(name).load()

    def help(self) -> str:
        """'a: what a does; b: ...' for --help texts."""
        return "; ".join(f"{e.name}: {e.help}" if e.help else e.name for e in self._entries.values())


# ---------------------------------------------------------------- the registries

TASKS: Registry[Entry] = Registry("task")  # what the training loop trains: modules, optimizers, step, pictures
TASKS.register("diffusion", "noisecraft.train.diffusion:DiffusionTask",
               "a denoiser (U-Net) trained by denoising score matching, with EMA and classifier-free guidance")
