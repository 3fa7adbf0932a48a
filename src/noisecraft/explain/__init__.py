"""Figures that explain a trained run, drawn from the run itself (`noisecraft explain`): the noise schedules, the
forward and reverse processes, samplers and step counts, guidance, the network (U-Net or transformer), cross-attention
and latents.

    from noisecraft.explain import ExplainOptions, explain
    index = explain("runs/digits", "figures/", ExplainOptions(figures=("reverse", "unet")))

Each figure is a PNG; `explain.json` lists what was written (name, file, what it shows, and the settings it was
drawn with), so a page or a notebook can pick figures by name. The figures themselves are in `process`,
`unet_diagram`, `dit_diagram` and the other modules here, one function each, registered in
`noisecraft.registry.FIGURES`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from noisecraft.conditioning.prompt_syntax import literal
from noisecraft.errors import UserError
from noisecraft.registry import ARCHITECTURES, FIGURES

INDEX_FILE = "explain.json"


@dataclass
class ExplainOptions:
    """What to draw and with which settings; every figure uses the same seeds, so figures compare."""

    figures: tuple[str, ...] | None = None  # names in registry.FIGURES; None: every one the run supports
    seed: int = 0  # image i of a row uses seed + i
    n: int = 4  # images (rows) in the process and guidance figures
    steps: int = 50  # sampler steps of the reverse process
    sampler: str = "ddim"  # sampler of the reverse process and the guidance sweep
    columns: int = 7  # steps shown in the forward and reverse processes
    sampler_steps: tuple[int, ...] = (5, 10, 20, 50)  # step counts compared in the samplers figure
    guidance: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 7.0)  # weights of the guidance sweep
    class_index: int | None = None  # class models: the class of every row; None: classes 0, 1, ... in turn
    prompts: list[str] = field(default_factory=list)  # text models: the rows' prompts; []: the dataset's captions
    loras: list[tuple[str, float]] = field(default_factory=list)  # (path, scale) of LoRA adapters to draw with


class ExplainContext:
    """A loaded pipeline with the options, and what several figures share (the dataset split, the rows)."""

    def __init__(self, pipe, options: ExplainOptions):
        self.pipe, self.options = pipe, options

    @cached_property
    def data(self):
        """The run's held-out split (real images for the forward process; captions for default prompts)."""
        from noisecraft.data import load_dataset

        return load_dataset(self.pipe.config.data, "val")

    def rows(self, n: int) -> torch.Tensor | list[str] | None:
        """The condition of each of n rows: class labels (n,), prompts, or None (unconditional)."""
        o = self.options
        return self.pipe.conditioner.figure_rows(  # a text model's default rows: captions read as written
            n, o.class_index, o.prompts, lambda k: [literal(c) for c in self.data.captions.examples(k)])

    def row_names(self, rows) -> list[str]:
        return [""] * self.options.n if rows is None else self.pipe.conditioner.row_names(rows)

    def supports(self, needs: str | None) -> bool:
        if needs == "condition":
            return self.pipe.conditioner.guidable
        if needs == "text":
            return self.pipe.conditioner.takes_prompts
        if needs == "student":  # a distilled run, drawn beside its teacher
            return self.pipe.config.train.task == "distill"
        if needs in ARCHITECTURES:  # a network's diagram draws that network
            return self.pipe.config.model.arch == needs
        if needs == "autoencoder":  # a latent pipeline carries the autoencoder that decodes its samples
            return getattr(self.pipe, "autoencoder", None) is not None
        if needs == "lora":  # adapters loaded (--lora)
            return bool(self.pipe.loras)
        if needs == "posthoc":  # snapshots of post-hoc EMA profiles to reconstruct from
            from noisecraft.explain.posthoc_ema import has_profiles

            return has_profiles(self.pipe)
        return needs is None


def explain(checkpoint: str | Path, out: str | Path, options: ExplainOptions | None = None, *,
            device: str = "auto", pipe=None) -> dict:
    """Draw the figures of `options.figures` (default: every one the run supports) for a run directory or
    checkpoint into `out`, and write the index `explain.json`. Returns the index. `pipe`: an already loaded
    pipeline to use instead of loading `checkpoint`."""
    options = options or ExplainOptions()
    names = options.figures if options.figures is not None else FIGURES.names()
    entries = [FIGURES.get(name, "figure") for name in names]
    if pipe is None:
        from noisecraft.pipeline import load_pipeline

        pipe = load_pipeline(checkpoint, device, loras=options.loras)
    ctx = ExplainContext(pipe, options)
    unmet = [e.name for e in entries if not ctx.supports(e.needs)]
    if options.figures is not None and unmet:
        raise UserError(f"this run ({pipe.kind}-conditional) cannot draw: {', '.join(unmet)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for e in entries:
        if e.name in unmet:
            continue
        path = out / f"{e.name}.png"
        details = e.load()(ctx, path) or {}
        figures.append({"name": e.name, "file": path.name, "what": e.help, **details})
    from noisecraft import __version__

    index = {"noisecraft": __version__, "checkpoint": str(pipe.path or checkpoint), "step": pipe.step,
             "kind": pipe.kind, "options": asdict(options), "figures": figures,
             "adapters": [{"name": n, "sha256": sha, "scale": s} for n, sha, s in pipe.loras],  # a fine-tuning's too
             "skipped": {name: FIGURES.get(name).needs for name in unmet}}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return index


def training_figure(pipe, name: str, path: str | Path, **options) -> dict:
    """One registered figure of a pipeline (the trainer's, over its EMA denoiser), with `ExplainOptions` fields
    as keywords: what training draws at its end through its hooks (registry.TRAINING_HOOKS)."""
    ctx = ExplainContext(pipe, ExplainOptions(**options))
    return FIGURES.load(name)(ctx, Path(path)) or {}
