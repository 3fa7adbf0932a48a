"""HTTP API for runs: list and follow them, start, stop and resume training, and the files they hold."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from noisecraft.serve.paths import find_runs, resolve_under
from noisecraft.serve.runs import run_detail, run_summary
from noisecraft.serve.schemas import ResumeBody, TrainBody
from noisecraft.serve.service import Service, Svc
from noisecraft.serve.training import TrainRequest

router = APIRouter(tags=["runs"])

# What /files serves (checkpoints are not downloads of the page); text is sent as plain text, never as HTML.
FILE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".json": "application/json",
              ".jsonl": "text/plain; charset=utf-8", ".md": "text/plain; charset=utf-8",
              ".txt": "text/plain; charset=utf-8", ".log": "text/plain; charset=utf-8"}


def _run_name(name: str, svc: Service) -> str:
    if svc.run_path(name) is None:
        raise HTTPException(404, "no such run")
    return name.strip("/")


def _with_process(info: dict, svc: Service) -> dict:
    """What this server knows beyond the files: whether it trains the run now, or saw it fail before it wrote
    its status."""
    info["training_here"] = svc.training.running(info["name"])
    error = svc.training.failed_early(info["name"])
    if error is not None:
        info.update(state="failed", error=error)
    return info


@router.get("/api/runs")
def runs(svc: Svc) -> dict:
    """Every run under --runs with its status (status.json; `process_gone` when a running run's pid is dead)."""
    return {"runs": [_with_process(run_summary(svc.runs_root, n), svc) for n in find_runs(svc.runs_root)]}


@router.get("/api/runs/{name:path}")
def run(name: str, svc: Svc) -> dict:
    """One run: status, config, curves (log.jsonl records by kind), sample grids by step, figures, reports."""
    return _with_process(run_detail(svc.runs_root, _run_name(name, svc)), svc)


@router.post("/api/train", status_code=202)
def start_training(body: TrainBody, svc: Svc) -> dict:
    """Start `noisecraft train` as a child process into a new run directory under --runs (data only from
    under the data root). 409 when the run exists."""
    req = TrainRequest(body.name, body.preset, body.dataset, body.data_dir, body.steps, dict(body.overrides))
    return svc.training.start(req)


@router.post("/api/runs/{name:path}/stop")
def stop_training(name: str, svc: Svc) -> dict:
    """SIGINT, as Ctrl-C: the trainer finishes its step, saves checkpoints/last and exits (status interrupted)."""
    return svc.training.stop(_run_name(name, svc))


@router.post("/api/runs/{name:path}/resume", status_code=202)
def resume_training(name: str, svc: Svc, body: ResumeBody | None = None) -> dict:
    """Continue a run from checkpoints/last (optionally to a new total of steps)."""
    return svc.training.resume(_run_name(name, svc), body.steps if body else None)


@router.get("/files/{rel:path}", response_class=FileResponse, tags=["files"])
def files(rel: str, svc: Svc) -> FileResponse:
    """A file of a run (images, JSON, logs, reports) under --runs; anything else, or outside, is 404."""
    path = resolve_under(svc.runs_root, rel)
    if path is None or not path.is_file() or path.suffix.lower() not in FILE_TYPES:
        raise HTTPException(404, "not found")
    return FileResponse(path, media_type=FILE_TYPES[path.suffix.lower()], headers={"Cache-Control": "no-cache"})
