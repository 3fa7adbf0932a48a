"""X/Y/Z comparison grids (AUTOMATIC1111's X/Y/Z plot): the same seeds drawn under up to three axes of settings
(sampler, steps, guidance, seed, a prompt's words, the run, ...), written as one labelled sheet, one PNG per cell
carrying its `parameters`, and a JSON of the cells.

    spec = GridSpec("runs/digits", x=parse_axis("steps=5,10,20"), y=parse_axis("guidance=1-4 [4]"), class_index=3)
    plan = plan_grid(spec, load_pipeline)                  # every cell resolved and checked; nothing drawn yet
    for ev in stream_grid(plan): ...                       # "step" and "cell" events (cells as they finish)
    write_grid(plan, "out/grid")                           # grid.png, cells/*.png, cells.json

`run_grid` is the three with a progress bar (the CLI's `noisecraft grid`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from noisecraft.grid.axes import Axis, format_value, parse_axis
from noisecraft.grid.plan import (
    MAX_CELLS,
    MAX_MEGAPIXELS,
    Cell,
    GridEvent,
    GridPlan,
    GridSpec,
    cell_settings,
    plan_grid,
    stream_grid,
)
from noisecraft.grid.sheet import cell_image, draw_sheet

CELLS_JSON = "cells.json"


def cell_file(cell: Cell) -> str:
    z, y, x = cell.position
    return f"cells/z{z}-y{y}-x{x}.png"


def write_cell(plan: GridPlan, cell: Cell, out: str | Path) -> Path:
    """A finished cell's images tiled into one PNG with the cell's `parameters`."""
    from noisecraft.imageinfo import png_info

    path = Path(out) / cell_file(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    cell_image(cell.images, plan.layout).save(path, pnginfo=png_info(cell_settings(plan, cell)))
    return path


def grid_json(plan: GridPlan) -> dict[str, Any]:
    """The axes and every cell: position, values, settings, and its PNG (null until drawn)."""
    spec = plan.spec
    axes = {k: {"name": a.name, "values": [_plain(v) for v in a.values], "labels": a.labels}
            for k, a in (("x", spec.x), ("y", spec.y), ("z", spec.z)) if a is not None}
    cells = [{"index": c.index, "position": dict(zip("zyx", c.position)), "values": c.labels,
              "settings": cell_settings(plan, c), "file": cell_file(c) if c.images is not None else None}
             for c in plan.cells]
    return {"axes": axes, "n": spec.n, "shape": dict(zip("zyx", spec.shape)), "cells": cells}


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def sheet(plan: GridPlan):
    """The labelled sheet (a PIL image) of the cells drawn so far."""
    spec, tiles = plan.spec, {c.position: cell_image(c.images, plan.layout) for c in plan.cells if c.images is not None}
    present = [(k, a) for k, a in (("x", spec.x), ("y", spec.y), ("z", spec.z)) if a is not None]
    return draw_sheet(tiles, plan.layout, {k: a.name for k, a in present}, {k: a.labels for k, a in present})


def write_grid(plan: GridPlan, out: str | Path, written: set[int] | frozenset = frozenset()) -> Path:
    """grid.png (the labelled sheet), cells.json, and each drawn cell's PNG but those in `written` (cell indices
    already written as they finished)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for cell in plan.cells:
        if cell.images is not None and cell.index not in written:
            write_cell(plan, cell, out)
    sheet(plan).save(out / "grid.png")
    (out / CELLS_JSON).write_text(json.dumps(grid_json(plan), indent=1, allow_nan=False) + "\n")
    return out


def run_grid(plan: GridPlan, out: str | Path, progress: bool = True) -> Path:
    """Draw a planned grid with a progress bar, writing each cell as it finishes, then the sheet and the JSON."""
    from tqdm.auto import tqdm

    from noisecraft.errors import UserError

    out = Path(out)
    try:
        (out / "cells").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {out}: {e.strerror}") from None
    written = set()
    with tqdm(total=plan.total_steps, desc=f"grid ({len(plan.cells)} cells)", unit="step", disable=not progress,
              leave=False) as bar:
        for ev in stream_grid(plan):
            if ev.kind == "step":
                bar.update(1)
            else:
                write_cell(plan, ev.cell, out)
                written.add(ev.cell.index)
    return write_grid(plan, out, written)


__all__ = ["CELLS_JSON", "MAX_CELLS", "MAX_MEGAPIXELS", "Axis", "Cell", "GridEvent", "GridPlan", "GridSpec",
           "cell_file", "cell_settings", "format_value", "grid_json", "parse_axis", "plan_grid",
           "run_grid", "sheet", "stream_grid", "write_cell", "write_grid"]
