"""The server's state: its settings, the runs root and data root, the checkpoint cache, the job queue and the
trainings it started. One per app (`app.state.service`); routes reach it through `service(request)`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from noisecraft.errors import UserError
from noisecraft.serve.cache import PipelineCache
from noisecraft.serve.jobs import JobQueue
from noisecraft.serve.paths import is_run_dir, resolve_under
from noisecraft.serve.schemas import Limits
from noisecraft.serve.training import TrainingManager


@dataclass
class ServeConfig:
    runs: str | Path  # every run directory under it is a model; nothing outside it is served
    data_root: str | Path | None = None  # the only place training started from the page reads data from
    host: str = "127.0.0.1"
    port: int = 7860
    device: str = "auto"  # where sampling runs
    cache_mb: int = 2048  # loaded checkpoints kept within this much memory
    max_queue: int = 32  # waiting jobs; more are answered 429
    max_history: int = 200  # finished jobs kept (with their images) for GET /api/jobs/{id}
    preview_every: int = 1  # a preview of the x0 estimate every N sampler steps
    threads: int = 0  # CPU threads for sampling; 0: torch's default (all cores)
    loras: tuple[str, ...] = ()  # adapter folders offered beside the fine-tuning runs under `runs` (serve --lora)
    limits: Limits = field(default_factory=Limits)


class Service:
    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        root = Path(cfg.runs)
        if not root.is_dir():
            raise UserError(f"--runs {root} is not a directory")
        self.runs_root = root.resolve()
        self.data_root = Path(cfg.data_root).resolve() if cfg.data_root else None
        if self.data_root is not None and not self.data_root.is_dir():
            raise UserError(f"--data-root {cfg.data_root} is not a directory")
        if cfg.threads > 0:  # on a busy machine fewer threads than cores avoids oversubscription stalls
            import torch

            torch.set_num_threads(cfg.threads)
        self.cache = PipelineCache(cfg.cache_mb << 20, cfg.device)
        self.queue = JobQueue(cfg.max_queue, cfg.max_history, cfg.preview_every)
        self.training = TrainingManager(self.runs_root, self.data_root)

    def run_path(self, name: str) -> Path | None:
        """The run directory called `name` (a path under --runs), or None."""
        path = resolve_under(self.runs_root, name)
        return path if path is not None and path != self.runs_root and path.is_dir() and is_run_dir(path) else None


def service(request: Request) -> Service:
    return request.app.state.service


Svc = Annotated[Service, Depends(service)]  # a route's parameter `svc: Svc` is this app's Service
