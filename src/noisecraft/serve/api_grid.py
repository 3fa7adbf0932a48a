"""HTTP API for comparison grids (noisecraft.grid): `POST /api/grid` plans the grid (a bad axis or value, too many
cells or too large a sheet: 422 before anything is drawn) and queues it as one job on the sampling queue; its
event stream sends each cell as it finishes; cancel with `DELETE /api/jobs/{id}` as any job."""
from __future__ import annotations

import io
import secrets
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from noisecraft.errors import UserError
from noisecraft.grid import GridPlan, GridSpec, cell_settings, grid_json, parse_axis, plan_grid, sheet, stream_grid
from noisecraft.grid.sheet import cell_image
from noisecraft.imageinfo import format_parameters, png_info
from noisecraft.pipeline import SamplingOptions
from noisecraft.serve.api_generate import check_limits, sse_event
from noisecraft.serve.jobs import Job, JobQueue, QueueFull
from noisecraft.serve.schemas import GridRequest
from noisecraft.serve.service import Service, Svc, service

router = APIRouter(prefix="/api", tags=["grid"])


class GridJobSpec:
    """A planned grid as a job of the sampling queue: it draws itself (`run`) and is never batched with others."""

    def __init__(self, model: str, plan: GridPlan):
        self.model, self.plan = model, plan
        self.key = ("grid", secrets.token_hex(8))

    @property
    def opts(self) -> SamplingOptions:
        return self.plan.cells[0].request.options

    @property
    def n(self) -> int:
        return sum(c.request.n for c in self.plan.cells)

    @property
    def labels(self) -> None:
        return None

    def batch_key(self) -> tuple:
        return self.key

    def run(self, job: GridJob, cancel, queue: JobQueue) -> None:
        t0 = time.perf_counter()
        for ev in stream_grid(self.plan, cancel):
            if job.state != "running":
                break
            if ev.kind == "step":
                job.step, job.total = ev.done, ev.total
                job.eta_s = (time.perf_counter() - t0) / ev.done * (ev.total - ev.done)
            else:
                settings = cell_settings(self.plan, ev.cell, model=ev.cell.checkpoint)
                job.cells[ev.cell.index] = (_png(cell_image(ev.cell.images, self.plan.layout), settings), settings)
            job.changed()
        if job.state == "running" and len(job.cells) == len(self.plan.cells):
            job.sheet = _png(sheet(self.plan))
        queue.complete(job)


class GridJob(Job):
    def __init__(self, spec: GridJobSpec, loop):
        super().__init__(spec, loop)
        self.total = spec.plan.total_steps
        self.cells: dict[int, tuple[bytes, dict]] = {}  # cell index -> (PNG with its parameters, settings)
        self.sheet: bytes | None = None  # the labelled sheet, once every cell is in

    def status(self) -> dict[str, Any]:
        return super().status() | {"cells_done": len(self.cells), "cells": len(self.spec.plan.cells),
                                   "sheet": f"/api/grid/{self.id}/sheet.png" if self.sheet else None}


def _png(image, settings: dict | None = None) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=png_info(settings) if settings else None)
    return buf.getvalue()


def _plan(body: GridRequest, svc: Service) -> GridPlan:
    check_limits(body, svc)
    if not (body.x or body.y or body.z):
        raise UserError("a grid needs at least one axis: x, y or z as NAME=VALUES")
    x, y, z = (None if a is None else parse_axis(a) for a in (body.x, body.y, body.z))
    _check_axis_limits([a for a in (x, y, z) if a is not None], svc)
    seed = secrets.randbelow(2**31) if body.seed is None else body.seed
    options = SamplingOptions(sampler=body.sampler, steps=body.steps, guidance=body.guidance, seed=seed,
                              negative_prompt=body.negative_prompt or None)
    spec = GridSpec(body.model, x, y, z, n=body.n, class_index=body.class_index, prompt=body.prompt or None,
                    options=options)
    return plan_grid(spec, lambda name: _load(name, svc))


def _check_axis_limits(axes: list, svc: Service) -> None:
    """The server's limits on steps and prompts hold for every cell, as for /api/generate."""
    lim = svc.cfg.limits
    for axis in axes:
        too_long = [v for v in axis.values if axis.name == "prompt_sr" and len(v) > lim.max_prompt]
        too_many = [v for v in axis.values if axis.name == "steps" and v > lim.max_steps]
        if too_long:
            raise UserError(f"grid axis prompt_sr: a value of {len(too_long[0])} characters; at most {lim.max_prompt}")
        if too_many:
            raise UserError(f"grid axis steps={too_many[0]}: steps must be at most {lim.max_steps}")


def _load(name: str, svc: Service):
    path = svc.run_path(name)
    if path is None:
        raise UserError(f"unknown model '{name}' (GET /api/models lists them)")
    return svc.cache.get(path)[1]


@router.post("/grid", status_code=202)
async def grid(body: GridRequest, svc: Svc) -> dict:
    """Queue an X/Y/Z grid: the same seeds under up to three axes of settings (`x`, `y`, `z` as NAME=VALUES; the
    rest as for /api/generate, `n` images per cell). Answers the cells to expect (axes, positions, settings) and
    where to follow them: `events` sends `progress`, a `cell` event per finished cell (its PNG's URL), then `done`."""
    plan = await run_in_threadpool(_plan, body, svc)
    try:
        job = svc.queue.submit(GridJobSpec(body.model, plan), GridJob)
    except QueueFull as e:
        raise HTTPException(429, str(e), headers={"Retry-After": "5"}) from None
    return {"id": job.id, "state": job.state, "position": svc.queue.position(job), "seed": plan.spec.options.seed,
            "events": f"/api/grid/{job.id}/events", "status": f"/api/jobs/{job.id}", "grid": grid_json(plan)}


def _grid_job(job_id: str, svc: Service) -> GridJob:
    job = svc.queue.get(job_id)
    if not isinstance(job, GridJob):
        raise HTTPException(404, f"no grid job '{job_id[:64]}' (finished jobs are kept for a while, then dropped)")
    return job


@router.get("/grid/{job_id}/cells/{index:int}.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def grid_cell(job_id: str, index: int, svc: Svc) -> Response:
    """A finished cell's images tiled, a PNG carrying the cell's settings in its `parameters` chunk."""
    job = _grid_job(job_id, svc)
    if index not in job.cells:
        raise HTTPException(404, f"cell {index} is not drawn (yet)")
    return Response(job.cells[index][0], media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})


@router.get("/grid/{job_id}/sheet.png", response_class=Response, responses={200: {"content": {"image/png": {}}}})
def grid_sheet(job_id: str, svc: Svc) -> Response:
    """The labelled sheet of a finished grid (axis titles, values, every cell)."""
    job = _grid_job(job_id, svc)
    if job.sheet is None:
        raise HTTPException(404, "the grid is not finished")
    return Response(job.sheet, media_type="image/png")


@router.get("/grid/{job_id}/events")
async def grid_events(job_id: str, request: Request) -> EventSourceResponse:
    """Server-sent events: `queued`, `progress` (step, total over the grid, eta_s), `cell` (index, position, values,
    url, settings, parameters) for each cell as it finishes, then `done` (the sheet's URL), `cancelled` or `error`.
    A grid whose every event stream closes before it ends is cancelled."""
    svc = service(request)
    return EventSourceResponse(_events(_grid_job(job_id, svc), svc.queue), ping=10)


async def _events(job: GridJob, queue: JobQueue):
    with queue.watching(job):
        position, step, sent = None, -1, set()
        while True:
            version, state = job.version, job.state
            if state == "queued" and queue.position(job) != position:
                position = queue.position(job)
                yield sse_event("queued", id=job.id, position=position)
            for index in sorted(set(job.cells) - sent):
                sent.add(index)
                yield sse_event("cell", **_cell(job, index))
            if state == "running" and job.step != step:
                step = job.step
                yield sse_event("progress", step=job.step, total=job.total, eta_s=job.eta_s, cells_done=len(sent))
            if state not in ("queued", "running"):
                yield sse_event(state, message=job.message, elapsed_s=(job.finished or time.time()) - (job.started or
                             job.created), sheet=job.status()["sheet"])
                return
            await job.wait_change(version, timeout=5.0)


def _cell(job: GridJob, index: int) -> dict:
    cell, settings = job.spec.plan.cells[index], job.cells[index][1]
    return {"index": index, "position": dict(zip("zyx", cell.position)), "values": cell.labels,
            "url": f"/api/grid/{job.id}/cells/{index}.png", "settings": settings,
            "parameters": format_parameters(settings)}
