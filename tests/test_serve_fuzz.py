"""Hostile traffic against a real server: at least 500 malformed or hostile requests (wrong types, huge numbers,
unicode, traversal paths, unknown models, truncated bodies, wrong methods and content types, broken HTTP) get no
5xx, and the server still serves a generation afterwards."""
from __future__ import annotations

import json
import random
import shutil
import socket
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serve_support import LiveServer, follow  # noqa: E402

from noisecraft.serve import ServeConfig  # noqa: E402

STRINGS = ["", " ", "digits", "digits/", "../digits", "../../etc/passwd", "/etc/passwd", "..", "%2e%2e", "%2e%2e%2f",
           "\x00", "digits\x00.png", "ｄｉｇｉｔｓ", "😀" * 40, "\u202eevil", "a" * 3000, "\\..\\x", "~", "~root",
           "CON", "<script>alert(1)</script>", "' OR 1=1 --", "${jndi:x}", "null", "NaN", "-1", "1e309", "\ud800",
           "\n\r", "digits/checkpoints/best.safetensors", "digits/samples/final.png", "digits/log.jsonl",
           "//", "./.", "a/b/c"]
VALUES = [None, True, False, 0, -1, 1, 7, 2**31, 2**63, 10**40, -10**40, 1e308, -1e308, 0.5, 1e-320, [], [1, 2],
          {}, {"a": {"b": []}}, *STRINGS]
GENERATE_FIELDS = ["model", "class_index", "prompt", "negative_prompt", "sampler", "steps", "guidance", "seed", "n"]
TRAIN_FIELDS = ["name", "preset", "dataset", "data_dir", "steps", "overrides"]
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=xyz", "application/json; charset=utf-16", None]


def mutated(rng: random.Random, base: dict, fields: list[str]):
    if rng.random() < 0.08:
        return rng.choice(VALUES)  # not an object at all
    body = dict(base)
    for f in fields:
        if rng.random() < 0.35:
            body[f] = rng.choice(VALUES)
        elif rng.random() < 0.1:
            body.pop(f, None)
    if rng.random() < 0.15:
        body[rng.choice(STRINGS)[:40] or "x"] = rng.choice(VALUES)
    return body


def encoded(rng: random.Random, body) -> bytes:
    text = json.dumps(body, allow_nan=True)  # may hold NaN and Infinity, as some clients send
    kind = rng.random()
    if kind < 0.15:
        return text[:rng.randrange(len(text) + 1)].encode()  # truncated
    if kind < 0.2:
        return rng.randbytes(rng.randrange(1, 400))
    if kind < 0.25:
        return text.encode("utf-16")
    return text.encode("utf-8", "surrogatepass")


def hostile_path(rng: random.Random) -> str:
    raw = rng.choice(STRINGS).encode("utf-8", "surrogatepass")  # a lone surrogate goes out as its bytes
    s = quote(raw, safe="/%") if rng.random() < 0.7 else quote(raw, safe="")
    return rng.choice([f"/files/{s}", f"/api/runs/{s}", f"/api/jobs/{s}", f"/api/jobs/{s}/events",
                       f"/api/jobs/{s}/images/{rng.choice(['0', '-1', '99999999999999999999', 'x'])}.png",
                       f"/static/{s}", f"/api/runs/{s}/stop", f"/api/runs/{s}/resume", f"/{s}", f"/docs/{s}"])


def http_requests(rng: random.Random, n: int):
    """(method, path, body bytes or None, content type) of n hostile requests."""
    for _ in range(n):
        r = rng.random()
        if r < 0.45:
            body = mutated(rng, {"model": "digits", "n": 1, "steps": 2, "seed": 1}, GENERATE_FIELDS)
            yield "POST", "/api/generate", encoded(rng, body), rng.choice(CONTENT_TYPES)
        elif r < 0.6:
            body = mutated(rng, {"name": f"fz{rng.randrange(10**6)}", "preset": "digits", "steps": 2}, TRAIN_FIELDS)
            yield "POST", "/api/train", encoded(rng, body), rng.choice(CONTENT_TYPES)
        elif r < 0.9:
            yield "GET", hostile_path(rng), None, None
        else:
            method = rng.choice(["PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "POST"])
            yield method, hostile_path(rng), encoded(rng, rng.choice(VALUES)), rng.choice(CONTENT_TYPES)


TRUNCATED = (b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n"
             b"\r\n{\"mo")  # 4 of the 200 bytes announced: not a whole request until the client gives up
RAW = [b"GARBAGE\r\n\r\n", b"GET /api/models HTTP/9.9\r\nHost: x\r\n\r\n",
       b"GET /api/models HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", TRUNCATED,
       b"POST /api/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nxx\r\n0\r\n\r\n",
       b"GET /files/..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
       b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
       b"GET /api/jobs/x HTTP/1.1\r\n" + b"H: v\r\n" * 500 + b"\r\n"]


def raw_status(url: str, payload: bytes, wait: float = 5.0) -> int | None:
    """Send bytes as they are and wait for the status line; None if none comes. The connection stays open for
    writing while we wait: a client that half-closes is a client gone away, whose request uvicorn drops. Only
    when no answer came in `wait` seconds (a request still incomplete) do we half-close and wait once more."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(payload)
        try:
            head = s.recv(64)
        except TimeoutError:
            s.shutdown(socket.SHUT_WR)
            try:
                head = s.recv(64)
            except OSError:
                return None
        except OSError:
            return None
    parts = head.split(b" ")
    return int(parts[1]) if head.startswith(b"HTTP/") and len(parts) > 1 and parts[1].isdigit() else None


def test_500_hostile_requests_get_no_5xx_and_the_server_stays_up(tiny_runs, tmp_path):
    runs, data = tmp_path / "runs", tmp_path / "data"
    shutil.copytree(tiny_runs / "digits", runs / "digits")
    (data / "folder").mkdir(parents=True)
    with LiveServer(ServeConfig(runs=runs, data_root=data, device="cpu", max_queue=8)) as live, \
            httpx.Client(base_url=live.url, timeout=30) as client:
        live.service.training.python = shutil.which("true")  # an accepted training request starts a no-op
        rng, statuses, accepted = random.Random(17), {}, []
        for method, path, body, ctype in http_requests(rng, 560):
            headers = {"content-type": ctype} if ctype else {}
            r = client.request(method, path, content=body, headers=headers)
            statuses.setdefault(r.status_code, []).append((method, path, (body or b"")[:120]))
            if path == "/api/generate" and r.status_code == 202:
                accepted.append(r.json()["id"])
                client.delete(f"/api/jobs/{r.json()['id']}")  # keep the worker free for the next ones
        truncated = raw_status(live.url, TRUNCATED, wait=2.0)  # its body never comes: no request to answer
        assert truncated is None or truncated < 500, truncated
        for payload in RAW:
            if payload is not TRUNCATED:
                code = raw_status(live.url, payload)
                statuses.setdefault(code, []).append(("RAW", payload[:60], b""))
        assert None not in statuses, statuses.get(None)  # every whole request got an answer (a status line) ...
        server_errors = {c: v[:5] for c, v in statuses.items() if c >= 500}
        assert not server_errors, server_errors  # ... and none of them a 5xx
        assert sum(len(v) for v in statuses.values()) == 560 + len(RAW) - 1
        assert {422, 404, 405} <= set(statuses) and accepted  # all kinds of refusal, and some jobs got through
        failed = [j.message for j in live.service.queue.jobs() if j.state == "error"]
        assert not failed, failed  # no accepted request broke the sampler either
        # still up: a normal request is served in full
        job = client.post("/api/generate", json={"model": "digits", "n": 2, "steps": 3, "seed": 4}).json()
        _, status = follow(client, job["id"])
        assert status["state"] == "done" and len(status["images"]) == 2
