"""HTTP API for sampling: models, options, jobs and their event streams."""
from __future__ import annotations

import json
import secrets
import time

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from noisecraft.conditioning import conditioner_for
from noisecraft.config import PRESETS, Config
from noisecraft.errors import UserError
from noisecraft.imageinfo import format_parameters
from noisecraft.registry import DATASETS, GRID_AXES, SAMPLERS, TASKS
from noisecraft.rundir import RunDir
from noisecraft.serve.edits import EDIT_OPENAPI, read_edit
from noisecraft.serve.images import data_url, strip_png
from noisecraft.serve.jobs import Job, JobQueue, JobSpec, QueueFull, image_url
from noisecraft.serve.loras import offered
from noisecraft.serve.paths import find_runs
from noisecraft.serve.runs import checkpoint_meta, read_json, run_summary
from noisecraft.serve.schemas import GenerateRequest
from noisecraft.serve.service import Service, Svc, service

router = APIRouter(prefix="/api", tags=["generate"])


def _draws(task: str) -> bool:
    """Whether runs of this training task sample images (an autoencoder run does not; an unknown task: no)."""
    return task in TASKS and TASKS.get(task).draws


@router.get("/options")
def options(svc: Svc) -> dict:
    """What a request may choose: samplers, presets, datasets and grid axes (from the registries) and the server's
    limits."""
    lim = svc.cfg.limits
    return {"samplers": [{"name": n, "help": SAMPLERS.get(n).help} for n in SAMPLERS],
            "grid_axes": [{"name": n, "help": GRID_AXES.get(n).help, "kind": GRID_AXES.get(n).kind} for n in GRID_AXES],
            "presets": [{"name": n, "help": PRESETS.get(n).help} for n in PRESETS],
            "datasets": [{"name": n, "help": DATASETS.get(n).help} for n in DATASETS],
            "limits": {"n": lim.max_n, "steps": lim.max_steps, "prompt": lim.max_prompt, "body_bytes": lim.max_body},
            "data_root": svc.data_root is not None}


@router.get("/models")
def models(svc: Svc) -> dict:
    """Every run under --runs that draws (diffusion, or a distilled few-step student: `few_step`) with a checkpoint:
    its kind (class, text, unconditional), the size of the images it draws, classes and defaults. (Autoencoder runs
    train and show on the runs page; they draw nothing.)"""
    out = []
    for name in find_runs(svc.runs_root):
        info = run_summary(svc.runs_root, name)
        if not info["has_checkpoint"] or info["kind"] is None or not _draws(info["task"]):
            continue
        meta, run = checkpoint_meta(svc.runs_root / name), RunDir(svc.runs_root / name)
        sample = (read_json(run.config) or {}).get("sample", {})
        conditioner = conditioner_for(Config.load(run.config).model, meta.get("class_names"))
        out.append({"name": name, "kind": info["kind"], "state": info["state"], "step": meta.get("step"),
                    "image_size": info["image_size"], "channels": info["channels"],
                    "classes": conditioner.request_classes(),
                    "defaults": {k: sample.get(k) for k in ("sampler", "steps", "guidance")},
                    "few_step": info["task"] == "distill",
                    "loras": [{"name": k, "sha256": v["sha256"], "trigger": v["trigger"]}
                              for k, v in offered(svc.runs_root, svc.cfg.loras, svc.runs_root / name).items()]})
    return {"models": out}


def check_limits(body: GenerateRequest, svc: Service) -> None:
    lim = svc.cfg.limits
    if body.n > lim.max_n:
        raise UserError(f"n must be at most {lim.max_n} images per request, got {body.n}")
    if body.steps is not None and body.steps > lim.max_steps:
        raise UserError(f"steps must be at most {lim.max_steps}, got {body.steps}")
    for field in ("prompt", "negative_prompt"):
        text = getattr(body, field)
        if text is not None and len(text) > lim.max_prompt:
            raise UserError(f"{field} must be at most {lim.max_prompt} characters, got {len(text)}")


def _job_spec(body: GenerateRequest, svc: Service, **edit) -> JobSpec:
    """The request checked against the model (its classes, kind and sampling defaults) -> a job to queue. `edit`:
    an edit's image, mask, strength and jumps (`Pipeline.prepare`'s arguments)."""
    check_limits(body, svc)
    path = svc.run_path(body.model)
    if path is None:
        raise UserError(f"unknown model '{body.model}' (GET /api/models lists them)")
    key, pipe = svc.cache.get(path)
    _load_loras(body, svc, path, pipe)
    seed = secrets.randbelow(2**31) if body.seed is None else body.seed
    # The pipeline's own rules: a class for a class model, a prompt for a text model, a negative prompt only there.
    request = pipe.prepare(body.n, body.class_index, prompt=body.prompt or None, sampler=body.sampler,
                           steps=body.steps, guidance=body.guidance, seed=seed,
                           negative_prompt=body.negative_prompt or None, lora_scales=body.loras, **edit)
    return JobSpec(body.model, key, pipe, request)


def _load_loras(body: GenerateRequest, svc: Service, run_dir, pipe) -> None:
    """Load the adapters a request names (its `loras` and its prompt's <lora:...> tags) onto the shared pipeline,
    at scale 0: each request says its own scales. A name the model is not offered is refused (422)."""
    from noisecraft.adapters import prompt_loras

    names = {*body.loras, *(prompt_loras(body.prompt or "")[1] if pipe.conditioner.takes_prompts else ())}
    if not names:
        return
    catalogue = offered(svc.runs_root, svc.cfg.loras, run_dir)
    for name in sorted(names):
        if name not in catalogue:
            raise UserError(f"no adapter named '{name}' for model '{body.model}' (offered: "
                            f"{', '.join(catalogue) or 'none'}; GET /api/models lists them)")
        if name not in pipe.adapters.files:
            pipe.load_lora(catalogue[name]["path"], name=name, scale=0.0)


@router.post("/generate", status_code=202)
def generate(body: GenerateRequest, svc: Svc) -> dict:
    """Queue a sampling job; follow it at `events` (server-sent events) or poll `status`. 429 when the queue is
    full; 422 for a request the model or the limits refuse (the message says why)."""
    return _submit(_job_spec(body, svc), svc)


@router.post("/edit", status_code=202, openapi_extra=EDIT_OPENAPI)
async def edit(request: Request, svc: Svc) -> dict:
    """Queue an edit of an image: img2img (SDEdit) without a mask, inpainting (RePaint) with one. The body is JSON
    (`EditRequest`: the image and mask as base64 or data: URLs) or multipart/form-data (the same fields, the image
    and mask as files). Same job, events, cancel, queue and batching as /api/generate."""
    body, image, mask = await read_edit(request, svc.runs_root)
    spec = await run_in_threadpool(_job_spec, body, svc, image=image, mask=mask, strength=body.strength,
                                   jumps=body.jumps)
    return _submit(spec, svc)


def _submit(spec: JobSpec, svc: Service) -> dict:
    try:
        job = svc.queue.submit(spec)
    except QueueFull as e:
        raise HTTPException(429, str(e), headers={"Retry-After": "5"}) from None
    return {"id": job.id, "state": job.state, "position": svc.queue.position(job), "seed": spec.opts.seed,
            "events": f"/api/jobs/{job.id}/events", "status": f"/api/jobs/{job.id}"}


def _job(job_id: str, svc: Service) -> Job:
    job = svc.queue.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job '{job_id[:64]}' (finished jobs are kept for a while, then dropped)")
    return job


@router.get("/jobs/{job_id}")
def job_status(job_id: str, svc: Svc) -> dict:
    job = _job(job_id, svc)
    return job.status() | {"position": svc.queue.position(job)}


@router.delete("/jobs/{job_id}")
def cancel_job(job_id: str, svc: Svc) -> dict:
    """Cancel a job: a queued one leaves the queue, a running one stops after the current step (its batch-mates
    go on)."""
    job = _job(job_id, svc)
    svc.queue.cancel(job)
    return job.status()


@router.get("/jobs/{job_id}/images/{index:int}.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def job_image(job_id: str, index: int, svc: Svc) -> Response:
    """Image `index` of a finished job, a PNG carrying its settings in the `parameters` text chunk."""
    job = _job(job_id, svc)
    if not 0 <= index < len(job.images):
        raise HTTPException(404, f"job has no image {index}")
    seed = job.settings[index].get("image_seed")
    return Response(job.images[index], media_type="image/png",
                    headers={"Content-Disposition": f'inline; filename="noisecraft-{seed}.png"',
                             "Cache-Control": "private, max-age=86400"})


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request) -> EventSourceResponse:
    """Server-sent events: `queued` (place in the queue), `progress` (step, total, eta_s and a PNG data URL of the
    x0 estimate), then one of `done` (image URLs and settings), `cancelled` or `error`. A job whose every event
    stream closes before it ends is cancelled: the client went away."""
    svc = service(request)
    return EventSourceResponse(_events(_job(job_id, svc), svc.queue), ping=10)


async def _events(job: Job, queue: JobQueue):
    with queue.watching(job):
        position, step = None, -1
        while True:
            version, state = job.version, job.state
            if state == "queued":
                if queue.position(job) != position:
                    position = queue.position(job)
                    yield sse_event("queued", id=job.id, position=position)
            elif state == "running":
                if job.step != step:
                    step = job.step
                    yield sse_event("progress", **_progress(job))
            else:
                yield sse_event(state, **_outcome(job))
                return
            await job.wait_change(version, timeout=5.0)


def sse_event(kind: str, **data) -> dict:
    return {"event": kind, "data": json.dumps(data, allow_nan=False)}


def _progress(job: Job) -> dict:
    preview = job.preview
    return {"step": job.step, "total": job.total, "eta_s": job.eta_s, "elapsed_s": time.time() - job.started,
            "batched_with": job.batched_with, "preview": None if preview is None else data_url(strip_png(preview))}


def _outcome(job: Job) -> dict:
    if job.state != "done":
        return {"message": job.message}
    return {"elapsed_s": job.finished - job.started, "batched_with": job.batched_with,
            "images": [{"url": image_url(job.id, i), "settings": s, "parameters": format_parameters(s)}
                       for i, s in enumerate(job.settings)]}
