"""A grid's cells and how they are drawn. `plan_grid` resolves every cell to a prepared `Request` (refusing bad
axes, too many cells or too large a sheet before anything is sampled); `stream_grid` draws them, cells that share
a sampler, steps and network merged into one batch (`Request.merged`: each image keeps its seed, condition and
guidance), and yields progress and each cell as it finishes.

Every cell draws the same n seeds (seed + i) unless seed is an axis, so cells differ only along their axes.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from noisecraft.editing import strength_grid
from noisecraft.errors import UserError
from noisecraft.grid.axes import Axis, format_value
from noisecraft.grid.sheet import Layout
from noisecraft.imageinfo import image_settings
from noisecraft.pipeline import CancelFlag, Pipeline, Request, SamplingOptions
from noisecraft.registry import GRID_AXES
from noisecraft.samplers import get_sigmas

MAX_CELLS = 1024
MAX_MEGAPIXELS = 64.0  # the labelled sheet; more is refused before sampling


@dataclass
class GridSpec:
    """What a grid draws besides its axes: the images of every cell, as `Pipeline.prepare` takes them."""

    checkpoint: str  # the run every cell uses unless checkpoint is an axis
    x: Axis | None = None
    y: Axis | None = None
    z: Axis | None = None
    n: int = 16  # images per cell
    class_index: int | None = None
    prompt: str | None = None
    image: Any = None  # edits: the image to start from (a strength axis needs it)
    options: SamplingOptions = field(default_factory=SamplingOptions)  # the rest; None: the run's default

    @property
    def axes(self) -> list[Axis]:
        return [a for a in (self.x, self.y, self.z) if a is not None]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(nz, ny, nx): values per axis, 1 where absent."""
        return tuple(1 if a is None else len(a.values) for a in (self.z, self.y, self.x))


@dataclass
class Cell:
    index: int  # row-major in (z, y, x): x varies fastest
    position: tuple[int, int, int]  # (z, y, x)
    values: dict[str, Any]  # axis name -> this cell's value
    checkpoint: str
    request: Request
    images: torch.Tensor | None = None  # uint8 (n, C, H, W) once drawn

    @property
    def labels(self) -> dict[str, str]:
        return {k: format_value(v) for k, v in self.values.items()}


@dataclass
class GridPlan:
    spec: GridSpec
    cells: list[Cell]
    pipes: dict[str, Pipeline]  # checkpoint -> its pipeline
    groups: list[list[int]]  # cell indices drawn together, in drawing order (slow axes outermost)
    layout: Layout

    @property
    def total_steps(self) -> int:
        """Sampler steps over the whole grid (each batch of each group walks its grid once)."""
        return sum(_group_steps(self, g) * math.ceil(len(g) * self.spec.n / self.batch_size(g)) for g in self.groups)

    def batch_size(self, group: list[int]) -> int:
        return min(self.cells[i].request.options.batch_size for i in group)


@dataclass
class GridEvent:
    """What `stream_grid` yields: "step" after each sampler step of any batch, "cell" when a cell's images are in."""

    kind: str  # "step" | "cell"
    done: int  # sampler steps run so far over the grid
    total: int  # GridPlan.total_steps
    cell: Cell | None = None  # "cell": the finished cell (its images set)


def plan_grid(spec: GridSpec, load: Callable[[str], Pipeline], *, max_cells: int = MAX_CELLS,
              max_megapixels: float = MAX_MEGAPIXELS) -> GridPlan:
    """Every cell of `spec` prepared (`load` turns a checkpoint value into its pipeline), checked and grouped."""
    nz, ny, nx = spec.shape
    if nz * ny * nx > max_cells:
        raise UserError(f"the grid has {nz * ny * nx} cells ({nx} x {ny} x {nz}); at most {max_cells}")
    if len({a.name for a in spec.axes}) != len(spec.axes):
        raise UserError("each grid axis may name a setting once")
    if spec.n < 1:
        raise UserError(f"n must be > 0 images per cell, got {spec.n}")
    pipes = _pipelines(spec, load)
    shapes = {p.image_shape for p in pipes.values()}
    if len(shapes) > 1:
        raise UserError(f"grid axis checkpoint: the runs draw images of different sizes {sorted(shapes)}")
    widest = max((len(v) for v in spec.y.labels), default=0) if spec.y else 0
    layout = Layout(spec.n, shapes.pop(), nx, ny, nz, widest)
    if layout.megapixels > max_megapixels:
        raise UserError(f"the grid's sheet would be {layout.size[0]}x{layout.size[1]} pixels "
                        f"({layout.megapixels:.1f} megapixels); at most {max_megapixels:g}: fewer cells or images")
    _check_values(spec, pipes)
    cells = [_cell(spec, pipes, (z, y, x), (z * ny + y) * nx + x)
             for z in range(nz) for y in range(ny) for x in range(nx)]
    slow = [a for a in spec.axes if GRID_AXES.get(a.name).facts.get("slow")]
    return GridPlan(spec, cells, pipes, _groups(cells, slow), layout)


def _pipelines(spec: GridSpec, load: Callable[[str], Pipeline]) -> dict[str, Pipeline]:
    """checkpoint value -> pipeline, each loaded once; a run that does not load names the axis and value."""
    axis = next((a for a in spec.axes if GRID_AXES.get(a.name).applies_to == "checkpoint"), None)
    out = {}
    for value in (spec.checkpoint,) if axis is None else axis.values:
        try:
            out[value] = load(value)
        except UserError as e:
            raise UserError(f"grid axis checkpoint={value}: {e}" if axis else str(e)) from None
    return out


def _check_values(spec: GridSpec, pipes: dict[str, Pipeline]) -> None:
    """Each axis value alone on the first run: the run's own rules refuse it with the axis and value named."""
    pipe = next(iter(pipes.values()))
    for axis in spec.axes:
        if GRID_AXES.get(axis.name).applies_to == "checkpoint":
            continue
        for value in axis.values:
            try:
                _request(spec, pipe, {axis.name: value})
            except UserError as e:
                raise UserError(f"grid axis {axis.name}={format_value(value)}: {e}") from None


def _cell(spec: GridSpec, pipes: dict[str, Pipeline], position: tuple[int, int, int], index: int) -> Cell:
    values = {a.name: a.values[i] for a, i in zip((spec.z, spec.y, spec.x), position) if a is not None}
    checkpoint = values.get("checkpoint", spec.checkpoint)
    try:
        request = _request(spec, pipes[checkpoint], values)
    except UserError as e:
        cell = ", ".join(f"{k}={format_value(v)}" for k, v in values.items())
        raise UserError(f"grid cell {cell}: {e}") from None
    return Cell(index, position, values, checkpoint, request)


def _request(spec: GridSpec, pipe: Pipeline, values: dict[str, Any]) -> Request:
    """One cell's request: the spec with the cell's axis values put where their registry entries say."""
    overrides, class_index, prompt, lora_scales = {}, spec.class_index, spec.prompt, None
    for name, value in values.items():
        target = GRID_AXES.get(name).applies_to
        if target == "option":
            overrides[name] = value
        elif target == "class":
            class_index = value
        elif target == "prompt":
            prompt = _replace(spec, name, value)
        elif target == "lora":
            lora_scales = {_one_adapter(pipe): value}
    if spec.image is None and "strength" in values:
        raise UserError("a strength axis needs an image to edit (--image)")
    return pipe.prepare(spec.n, class_index, prompt=prompt, image=spec.image, options=spec.options,
                        lora_scales=lora_scales, **overrides)


def _one_adapter(pipe: Pipeline) -> str:
    """The name of the one adapter a lora_scale axis scales."""
    names = [name for name, _, _ in pipe.adapters.active()]
    if len(names) != 1:
        raise UserError(f"a lora_scale axis scales one adapter: load exactly one with --lora PATH ({len(names)} "
                        f"loaded)")
    return names[0]


def _replace(spec: GridSpec, name: str, value: str) -> str:
    search = next(a.search for a in spec.axes if a.name == name)
    if not spec.prompt or search not in spec.prompt:
        raise UserError(f"'{search}' (the first value) is not in the prompt {spec.prompt!r}")
    return spec.prompt.replace(search, value)


def _groups(cells: list[Cell], slow: list[Axis]) -> list[list[int]]:
    """Cells that may share a batch (same run, and the same request but for conditions, seeds and guidance), in
    drawing order: the slow axes (a run to load) outermost, then in the order the cells come."""
    groups: dict[tuple, list[int]] = {}
    for c in cells:
        groups.setdefault((c.checkpoint, c.request.batch_key(per_image_guidance=True)), []).append(c.index)

    def order(group: list[int]) -> tuple:
        first = cells[group[0]]
        return (*(a.values.index(first.values[a.name]) for a in slow), first.index)

    return sorted(groups.values(), key=order)


def _group_steps(plan: GridPlan, group: list[int]) -> int:
    cell = plan.cells[group[0]]
    o = cell.request.options
    sigmas = strength_grid(lambda k: get_sigmas(plan.pipes[cell.checkpoint].denoiser, o.sampler, k), o.steps, o.strength)
    return len(sigmas) - 1


def stream_grid(plan: GridPlan, cancel: CancelFlag | None = None) -> Iterator[GridEvent]:
    """Draw the plan's cells group by group, yielding "step" events and each cell as its last image comes in.
    Stops (no further network call) once `cancel` is set or the caller closes the generator."""
    done, total = 0, plan.total_steps
    for group in plan.groups:
        cells = [plan.cells[i] for i in group]
        merged = Request.merged([c.request for c in cells])
        request = dataclasses.replace(merged, options=dataclasses.replace(merged.options,
                                                                          batch_size=plan.batch_size(group)))
        owner = [(c, k) for c in cells for k in range(c.request.n)]  # merged image j -> (cell, its image k)
        parts: dict[int, list[tuple[int, torch.Tensor]]] = {c.index: [] for c in cells}
        for ev in plan.pipes[cells[0].checkpoint].stream(request=request, cancel=cancel):
            if ev.kind == "step":
                done += 1
                yield GridEvent("step", done, total)
                continue
            for j, image in zip(ev.indices, ev.images):
                cell, k = owner[j]
                parts[cell.index].append((k, image))
                if len(parts[cell.index]) == cell.request.n:
                    cell.images = torch.stack([im for _, im in sorted(parts[cell.index], key=lambda p: p[0])])
                    yield GridEvent("cell", done, total, cell)
        if cancel is not None and cancel.is_set():
            return


def cell_settings(plan: GridPlan, cell: Cell, model: str | None = None) -> dict[str, Any]:
    """A cell's settings as the PNG `parameters` chunk records them: its first image's (seed = the cell's seed),
    with the number of images as A1111's batch size and the grid position."""
    pipe = plan.pipes[cell.checkpoint]
    s = image_settings(pipe, dataclasses.replace(cell.request, seeds=cell.request.seeds[:1]),
                       model=model or cell.checkpoint)[0]
    for key in ("index", "image_seed"):
        s.pop(key, None)
    return {**s, "batch_size": cell.request.n, "grid_cell": "/".join(str(p) for p in cell.position)}
