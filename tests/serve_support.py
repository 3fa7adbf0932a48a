"""Helpers for the server's tests: a real uvicorn server on a free loopback port, and a server-sent-events reader."""
from __future__ import annotations

import json
import threading
import time

import httpx


class LiveServer:
    """`create_app(cfg)` served by uvicorn in a thread on 127.0.0.1 (a free port); `url`, `app`, `service`."""

    def __init__(self, cfg):
        import uvicorn

        from noisecraft.serve import create_app

        self.app = create_app(cfg)
        self.service = self.app.state.service
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def sse(client: httpx.Client, url: str, timeout: float = 60.0):
    """Yield (event, data) of a server-sent-events stream until the server ends it (pings skipped)."""
    with client.stream("GET", url, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        event, data = None, []
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and event is not None:
                yield event, json.loads("\n".join(data)) if data else None
                event, data = None, []


def follow(client: httpx.Client, job_id: str) -> tuple[list[tuple[str, dict]], dict]:
    """All events of a job (until done, cancelled or error) and its final status."""
    events = list(sse(client, f"/api/jobs/{job_id}/events"))
    return events, client.get(f"/api/jobs/{job_id}").json()


def wait_for(predicate, timeout=30.0, what="condition"):
    """Poll `predicate` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
