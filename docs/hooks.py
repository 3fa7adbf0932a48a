"""MkDocs hooks: the pages' generated parts, made from the code at build time so they cannot drift from it.

- every page gets a line naming the noisecraft version it documents (`noisecraft.__version__`);
- `<!-- generated: cli -->` becomes every command and flag of the argparse parser (`noisecraft.cli.make_parser`);
- `<!-- generated: config -->` becomes every config field with its type, default and comment
  (`noisecraft.config.field_docs`), then the presets and the registries' names;
- `<!-- generated: NAME -->`, for each table of benchmarks/figures.py (quickstart, laptop_presets, latent_vs_pixel,
  ...), becomes that table, rendered from benchmarks/results/ (the README's tables come from the same functions);
- `<!-- generated: grid_axes -->` becomes the axes a comparison grid takes (`noisecraft.registry.GRID_AXES`);
- `<!-- generated: benchmarks -->` becomes the measured figures in benchmarks/results/*.json(l), each with the
  machine it was measured on.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # document this checkout, whatever is installed


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- CLI


def _flag_row(a: argparse.Action) -> list[str]:
    names = ", ".join(f"`{s}`" for s in a.option_strings) or f"`{a.dest}`"
    if a.choices:
        value = " | ".join(f"`{c}`" for c in a.choices)
    elif a.nargs == 0:
        value = ""
    else:
        value = f"`{a.metavar or a.dest.upper()}`"
    default = "" if a.default in (None, False, argparse.SUPPRESS) else f"`{a.default}`"
    return [names, value, default + (" (required)" if a.required else ""), a.help or ""]


def cli_markdown() -> str:
    from noisecraft.cli import make_parser

    parser = make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    out = []
    for name, p in sub.choices.items():
        out += [f"## `noisecraft {name}`", "", helps.get(name, "") + ("" if p.description is None else
                                                                      f"\n\n{p.description}"), "",
                "```text", p.format_usage().replace("usage: ", "").strip(), "```", ""]
        rows = [_flag_row(a) for a in p._actions if not isinstance(a, argparse._HelpAction)]
        out += [_table(["flag", "value", "default", "meaning"], rows), ""]
    return "\n".join(out)


# ---------------------------------------------------------------- config


def _type_name(tp) -> str:
    text = str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return text.replace("noisecraft.config.sections.", "")  # an architecture's settings: by their class name


def _config_section(name: str, cls: type) -> list[str]:
    """A config section's heading, docstring and table of fields (type, default, the field's comment)."""
    from noisecraft import config

    docs, hints, rows = config.field_docs(cls), typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append([f"`{name}.{f.name}`", f"`{_type_name(hints[f.name])}`",
                     f"`{json.dumps(config.json_safe(default))}`", docs.get(f.name, "")])
    return [f"## `{name}`", "", (cls.__doc__ or "").strip(), "",
            _table(["field", "type", "default", "meaning"], rows), ""]


def config_sections():
    """(name, dataclass) of every config section, each architecture's own settings (`model.unet`, ...) after
    `model`: what the reference page documents."""
    from noisecraft import config

    for section in dataclasses.fields(config.Config):
        yield section.name, section.type if isinstance(section.type, type) else getattr(config, section.type)
        if section.name == "model":
            yield from ((f"model.{arch}", settings) for arch, settings in config.ARCH_SETTINGS.items())


def config_markdown() -> str:
    from noisecraft import config, registry

    out = []
    for name, cls in config_sections():
        out += _config_section(name, cls)
    out += ["## Presets", "", "`noisecraft train --preset NAME`; each is a function in `noisecraft/config/presets.py`, a base and the fields it sets.", "",
            _table(["preset", "what"], [[f"`{n}`", config.PRESETS.get(n).help] for n in config.PRESETS]), ""]
    out += ["## Names", "", "The names a field or flag accepts, from `noisecraft/registry.py` (one registry per "
            "concept; validation and the CLI's choices read them there).", ""]
    for name, reg in vars(registry).items():
        if isinstance(reg, registry.Registry):
            out += [f"### {reg.concept} (`registry.{name}`)", "",
                    _table(["name", "what"], [[f"`{n}`", reg.get(n).help] for n in reg]), ""]
    return "\n".join(out)


# ---------------------------------------------------------------- benchmarks

MACHINE_KEYS = ("machine", "cpu", "cpu_model", "device", "threads", "torch_threads", "precision", "avx2",
                "avx512_bf16", "amx_bf16", "torch", "isa_flags", "kernels_capped_to")
NOT_FIGURES = ("what", "benchmark", "run", "load_average_1_5_15", "load_average_after", "loadavg_start")


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool)) or (
        isinstance(v, list) and all(isinstance(x, (str, int, float)) for x in v) and len(v) <= 8)


def _flat(d: dict, prefix: str = "") -> list[list[str]]:
    """(key, value) rows of the scalars of a nested dict; lists of records are left to `_records`."""
    rows = []
    for k, v in d.items():
        if _scalar(v):
            rows.append([f"`{prefix}{k}`", f"{v}"])
        elif isinstance(v, dict):
            rows += _flat(v, f"{prefix}{k}.")
    return rows


def _records(d: dict) -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
            keys = [c for c in dict.fromkeys(c for r in v for c in r) if all(_scalar(r.get(c)) for r in v)
                    and c not in MACHINE_KEYS + NOT_FIGURES]
            out += [f"**{k}**", "", _table(keys, [[r.get(c, "") for c in keys] for r in v]), ""]
    return out


def _machine(d: dict) -> str:
    m = {k: d[k] for k in MACHINE_KEYS if k in d}
    if isinstance(m.get("machine"), dict):
        m = {**m.pop("machine"), **m}
    return ", ".join(f"{k}: {v}" for k, v in m.items() if k != "load_average_1_5_15") or "not recorded"


def benchmarks_markdown() -> str:
    out = []
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json*")):
        out += [f"## `{path.name}`", ""]
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            out += [f"Measured on: {_machine(records[0])}.", ""] + _records({"records": records})
            continue
        d = json.loads(path.read_text())
        what = d.get("what") or d.get("benchmark") or d.get("model") or ""
        out += [f"{what}", "", f"Measured on: {_machine(d)}.", ""]
        rows = _flat({k: v for k, v in d.items() if k not in MACHINE_KEYS + NOT_FIGURES})
        out += [_table(["figure", "value"], rows), ""] + _records(d)
    return "\n".join(out)


def grid_axes_markdown() -> str:
    from noisecraft.registry import GRID_AXES

    kinds = {"int": "whole numbers, ranges", "float": "numbers, ranges", "name": "names", "interval": "`LO:HI` or `all`",
             "text": "words", "run": "runs"}
    rows = [[f"`{n}`", kinds[GRID_AXES.get(n).kind], GRID_AXES.get(n).help] for n in GRID_AXES]
    return _table(["axis", "values", "what it sets"], rows)


# ---------------------------------------------------------------- the hook

def _figures():
    """benchmarks/figures.py: every table of measured figures, rendered from benchmarks/results/ (the README's
    tables come from the same functions)."""
    import importlib

    sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module("figures")


GENERATORS = {"cli": cli_markdown, "config": config_markdown, "benchmarks": benchmarks_markdown,
              "grid_axes": grid_axes_markdown,
              **{name: (lambda n=name: _figures().render(n)) for name in _figures().TABLES}}


def on_page_markdown(markdown: str, page, config, files) -> str:
    from noisecraft import __version__

    for name, make in GENERATORS.items():
        marker = f"<!-- generated: {name} -->"
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    lines = markdown.split("\n")
    at = next((i + 1 for i, line in enumerate(lines) if line.startswith("# ")), 0)
    note = f'<p class="nc-version">This page documents noisecraft {__version__}.</p>'
    return "\n".join(lines[:at] + ["", note, ""] + lines[at:])
