"""Sampling jobs: a bounded queue in front of one worker thread that draws jobs with the same model and settings
together, in one sampler call, each with its own seeds and classes.

A job is queued -> running -> done | cancelled | error. Cancelling a queued job removes it; cancelling a running
job stops its updates at once, and the sampler call stops after the current step when every job in it is
cancelled (one client's cancel never stops another's images). Worker-side changes wake the event streams of
the job through its asyncio loop (`Job.wait_change`).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from noisecraft.errors import UserError
from noisecraft.imageinfo import image_settings
from noisecraft.pipeline import Pipeline, Request
from noisecraft.serve.images import png_bytes

log = logging.getLogger("noisecraft.serve")
TERMINAL = ("done", "cancelled", "error")


class QueueFull(Exception):
    pass


@dataclass
class JobSpec:
    """A validated request: which model, and the request `pipe.prepare` resolved (its images, conditions, seeds
    and options; `request.options.seed` is this job's seed)."""

    model: str  # the run's name under --runs
    key: tuple  # the checkpoint it was validated against (see PipelineCache.key)
    pipe: Pipeline
    request: Request

    @property
    def opts(self):
        return self.request.options

    @property
    def n(self) -> int:
        return self.request.n

    @property
    def labels(self) -> torch.Tensor | list[str] | None:
        return self.request.labels

    def batch_key(self) -> tuple:
        """Jobs with equal keys can share a sampler call: everything but seeds, classes or prompts, and counts."""
        return (self.key, *self.request.batch_key())


class Job:
    def __init__(self, spec: JobSpec, loop: asyncio.AbstractEventLoop | None):
        self.id, self.spec, self.loop = uuid.uuid4().hex, spec, loop
        self.state, self.created = "queued", time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.step, self.total, self.eta_s, self.batched_with = 0, spec.opts.steps, None, 0
        self.preview: torch.Tensor | None = None  # uint8 (n, C, H, W): the latest x0 estimate
        self.images: list[bytes] = []  # PNGs with their `parameters`
        self.settings: list[dict] = []
        self.message: str | None = None  # why it failed or was cancelled
        self.version, self.subscribers = 0, 0
        self._event = asyncio.Event()

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    # ---- change notification (any thread -> the event loop)

    def changed(self) -> None:
        self.version += 1
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop closed in between: nobody is listening
                pass

    def _wake(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_change(self, version: int, timeout: float) -> None:
        """Return once `self.version` differs from `version`, or after `timeout` seconds."""
        if self.version != version:
            return
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def status(self) -> dict[str, Any]:
        o = self.spec.opts
        return {"id": self.id, "state": self.state, "model": self.spec.model, "n": self.spec.n, "step": self.step,
                "total": self.total, "eta_s": self.eta_s, "message": self.message, "batched_with": self.batched_with,
                "created": self.created, "started": self.started, "finished": self.finished,
                "settings": {"sampler": o.sampler, "steps": o.steps, "guidance": o.guidance, "seed": o.seed,
                             "precision": o.precision, "labels": _plain(self.spec.labels),
                             "negative_prompt": getattr(o, "negative_prompt", None)},
                "images": [image_url(self.id, i) for i in range(len(self.images))]}


def _plain(labels) -> list | None:
    return labels.tolist() if torch.is_tensor(labels) else labels


def image_url(job_id: str, i: int) -> str:
    return f"/api/jobs/{job_id}/images/{i}.png"


class _AllCancelled:
    """The sampler call's cancel flag: set once every job in it is cancelled (or the server stops)."""

    def __init__(self, jobs: list[Job], stopping: threading.Event):
        self.jobs, self.stopping = jobs, stopping

    def is_set(self) -> bool:
        return self.stopping.is_set() or all(j.state == "cancelled" for j in self.jobs)


class JobQueue:
    def __init__(self, max_queue: int = 32, max_history: int = 200, preview_every: int = 1):
        self.max_queue, self.max_history, self.preview_every = max_queue, max_history, preview_every
        self.loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.sampler_calls = 0  # how many sampler calls ran (tests and the benchmark read the batching gain)

    # ---- lifecycle

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="noisecraft-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        with self._cond:
            for job in list(self._queue):
                self._set_cancelled(job, "server stopping")
            self._queue.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- what the routes call

    def submit(self, spec: JobSpec, job_class: type[Job] = Job) -> Job:
        """Queue a job (`job_class`: a Job whose spec has `run(job, cancel, queue)` draws it its own way, as a
        grid does)."""
        with self._cond:
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} jobs waiting); try again later")
            job = job_class(spec, self.loop)
            self._jobs[job.id] = job
            self._queue.append(job)
            self._prune()
            self._cond.notify()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def position(self, job: Job) -> int | None:
        """1-based place in the queue of a waiting job."""
        with self._cond:
            for i, j in enumerate(self._queue):
                if j is job:
                    return i + 1
        return None

    @contextmanager
    def watching(self, job: Job):
        """One event stream following `job`: a job whose every stream closes before it ends is cancelled (the client
        went away)."""
        job.subscribers += 1
        try:
            yield job
        finally:
            job.subscribers -= 1
            if job.subscribers == 0 and not job.done:
                self.cancel(job, "the client went away")

    def cancel(self, job: Job, reason: str = "cancelled") -> None:
        with self._cond:
            if job.done:
                return
            if job.state == "queued":
                self._queue.remove(job)
                self._notify_queued()
            self._set_cancelled(job, reason)

    def jobs(self) -> list[Job]:
        """The jobs still known, oldest first (finished ones are dropped past `max_history`)."""
        return list(self._jobs.values())

    # ---- the worker

    def _set_cancelled(self, job: Job, reason: str) -> None:
        job.state, job.message, job.finished = "cancelled", reason, time.time()
        job.changed()

    def _notify_queued(self) -> None:
        for j in self._queue:  # their places moved
            j.changed()

    def _prune(self) -> None:
        finished = [j for j in self._jobs.values() if j.done]
        for j in finished[:max(0, len(finished) - self.max_history)]:
            del self._jobs[j.id]

    def _take(self) -> list[Job]:
        """The next job and the waiting jobs that can share its sampler call (same batch key, within the
        batch size the model samples at, at least the first job's n)."""
        with self._cond:
            while not self._queue and not self._stopping.is_set():
                self._cond.wait()
            if self._stopping.is_set():
                return []
            first = self._queue.popleft()
            key, cap = first.spec.batch_key(), max(first.spec.opts.batch_size, first.spec.n)
            jobs, size = [first], first.spec.n
            for j in list(self._queue):
                if j.spec.batch_key() == key and size + j.spec.n <= cap:
                    self._queue.remove(j)
                    jobs.append(j)
                    size += j.spec.n
            for j in jobs:
                j.state, j.started, j.batched_with = "running", time.time(), len(jobs)
                j.changed()
            self._notify_queued()
            return jobs

    def _run(self) -> None:
        while not self._stopping.is_set():
            jobs = self._take()
            if jobs:
                self.sampler_calls += 1
                try:
                    run = getattr(jobs[0].spec, "run", None)
                    if run is not None:  # a job that draws itself (a grid): never batched with others
                        run(jobs[0], _AllCancelled(jobs, self._stopping), self)
                    else:
                        self._sample(jobs)
                except Exception as e:  # a job's failure is reported to its clients; the worker goes on
                    message = str(e) if isinstance(e, UserError) else f"sampling failed: {type(e).__name__}: {e}"
                    if not isinstance(e, UserError):
                        log.exception("sampling failed")
                    with self._cond:
                        for j in jobs:
                            if not j.done:
                                j.state, j.message, j.finished = "error", message, time.time()
                                j.changed()

    def _sample(self, jobs: list[Job]) -> None:
        request = Request.merged([j.spec.request for j in jobs])  # one sampler batch, each image its own seed
        ends = [sum(j.spec.n for j in jobs[:k + 1]) for k in range(len(jobs))]
        spans = list(zip([0, *ends[:-1]], ends))
        cancel, t0 = _AllCancelled(jobs, self._stopping), time.perf_counter()
        stream = jobs[0].spec.pipe.stream(request=request, preview_every=self.preview_every, cancel=cancel)
        for ev in stream:
            if ev.kind == "step":
                eta = (time.perf_counter() - t0) / ev.step * (ev.total - ev.step)
                for job, (a, b) in zip(jobs, spans):
                    if job.state == "running":
                        job.step, job.total, job.eta_s = ev.step, ev.total, eta
                        job.preview = None if ev.preview is None else ev.preview[a:b]
                        job.changed()
            else:
                for job, (a, b) in zip(jobs, spans):
                    self._finish(job, ev.images[a:b])
        with self._cond:  # the stream stopped early (the server is stopping): no job is left "running"
            for job in jobs:
                if job.state == "running":
                    self._set_cancelled(job, "server stopping")

    def complete(self, job: Job) -> None:
        """A running job that drew itself is done (a cancelled one stays cancelled; if the stream stopped early
        because the server is stopping, it is cancelled)."""
        with self._cond:
            if job.state == "running":
                if self._stopping.is_set():
                    self._set_cancelled(job, "server stopping")
                else:
                    job.state, job.finished, job.eta_s = "done", time.time(), 0.0
                    job.changed()

    def _finish(self, job: Job, images: torch.Tensor) -> None:
        s = job.spec
        settings = image_settings(s.pipe, s.request, model=s.model)
        pngs = [png_bytes(img, st) for img, st in zip(images, settings)]
        with self._cond:
            if job.state != "running":  # cancelled meanwhile
                return
            job.images, job.settings = pngs, settings
            job.state, job.finished, job.eta_s = "done", time.time(), 0.0
            job.changed()
