"""The web server's HTTP API against a real uvicorn server on loopback and a tiny trained run: the images are the
pipeline's (and the CLI's) for the same seed, also when 8 clients' jobs share one sampler call; cancel stops the
network calls within a step and never touches a batch-mate; a client that goes away cancels its job; limits and
hostile requests get 4xx with a message, never 5xx; only files under --runs are served."""
from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serve_support import follow, sse, wait_for  # noqa: E402

from noisecraft.serve import ServeConfig  # noqa: E402


@pytest.fixture(scope="module")
def pipe(tiny_runs):
    from noisecraft.pipeline import load_pipeline

    return load_pipeline(tiny_runs / "digits", "cpu")


def png_array(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def images_of(client, status: dict) -> list[np.ndarray]:
    return [png_array(client.get(url).content) for url in status["images"]]


def expected(pipe, n, **kw) -> list[np.ndarray]:
    return [img[0].numpy() for img in pipe.generate(n, **kw)]  # (C, H, W) -> (H, W) for one channel


def submit(client, **body) -> dict:
    r = client.post("/api/generate", json={"model": "digits", **body})
    assert r.status_code == 202, r.text
    return r.json()


def test_models_and_options_come_from_the_runs_and_registries(client):
    from noisecraft.config import PRESETS, preset
    from noisecraft.registry import DATASETS, SAMPLERS

    opts = client.get("/api/options").json()
    assert [s["name"] for s in opts["samplers"]] == list(SAMPLERS.names())
    assert [p["name"] for p in opts["presets"]] == list(PRESETS.names())
    assert [d["name"] for d in opts["datasets"]] == list(DATASETS.names())
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert set(models) == {"digits", "digits-b"}
    m = models["digits"]
    assert (m["kind"], m["classes"], m["image_size"], m["channels"]) == ("class", list("0123456789"), 28, 1)
    assert m["step"] == 4
    assert m["defaults"] == {"sampler": preset("digits").sample.sampler, "steps": 2, "guidance": 1.0}


def test_generate_streams_previews_and_gives_the_pipelines_and_the_clis_images(client, pipe, tiny_runs, cli, tmp_path):
    from noisecraft.imageinfo import parse_parameters, read_parameters

    job = submit(client, class_index=3, n=3, seed=11, steps=4, sampler="ddim")
    events, status = follow(client, job["id"])
    progress = [d for e, d in events if e == "progress" and d["step"] > 0]
    steps = [d["step"] for d in progress]  # the latest state wins: a step the sampler outpaced the stream on is
    assert steps and steps == sorted(set(steps)) and set(steps) <= {1, 2, 3, 4}  # folded into the next event
    assert all(d["total"] == 4 for d in progress)
    assert all(d["preview"].startswith("data:image/png;base64,") for d in progress)
    assert events[-1][0] == "done" and status["state"] == "done" and len(status["images"]) == 3
    got = images_of(client, status)
    for a, b in zip(got, expected(pipe, 3, class_index=3, seed=11, steps=4, sampler="ddim"), strict=True):
        np.testing.assert_array_equal(a, b)
    # the CLI draws the same images, and both write the settings into the PNG
    code, _, err = cli("sample", "--checkpoint", tiny_runs / "digits", "--class", 3, "--n", 3, "--seed", 11,
                       "--steps", 4, "--sampler", "ddim", "--device", "cpu", "--out", tmp_path / "s")
    assert code == 0, err
    np.testing.assert_array_equal(png_array((tmp_path / "s" / "00001.png").read_bytes()), got[1])
    for text in (read_parameters(tmp_path / "s" / "00001.png"), events[-1][1]["images"][1]["parameters"]):
        p = parse_parameters(text)
        assert (p["seed"], p["image_seed"], p["index"], p["class"]) == (11, 12, 1, 3)
        assert (p["steps"], p["sampler"]) == (4, "ddim")
    server_png = tmp_path / "server.png"
    server_png.write_bytes(client.get(status["images"][2]).content)
    code, out, _ = cli("info", server_png)
    assert code == 0 and "Seed: 11, Image index: 2, Image seed: 13, Class: 3" in out and "Model: digits" in out


def test_eight_concurrent_clients_get_their_own_images_from_one_sampler_call(live, client, pipe):
    blocker = submit(client, steps=1000, n=1, seed=0)  # holds the worker until all 8 wait, so they batch
    wait_for(lambda: client.get(f"/api/jobs/{blocker['id']}").json()["state"] == "running", what="blocker")
    calls_before, results, ready = live.service.queue.sampler_calls, {}, threading.Barrier(9)

    def one_client(k: int) -> None:
        with httpx.Client(base_url=live.url, timeout=60) as c:
            job = submit(c, class_index=k, n=2, seed=100 * k, steps=6, sampler="ddim")
            ready.wait()
            _, status = follow(c, job["id"])
            results[k] = (status, images_of(c, status))

    threads = [threading.Thread(target=one_client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    ready.wait(timeout=30)
    client.delete(f"/api/jobs/{blocker['id']}")
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(8))
    for k, (status, got) in results.items():
        assert status["state"] == "done" and status["batched_with"] == 8
        for a, b in zip(got, expected(pipe, 2, class_index=k, seed=100 * k, steps=6, sampler="ddim"), strict=True):
            np.testing.assert_array_equal(a, b)
    assert live.service.queue.sampler_calls - calls_before == 1


def count_network_calls(live, tiny_runs):
    _, served = live.service.cache.get(tiny_runs / "digits")
    calls = []
    handle = served.denoiser.net.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def settle(calls, quiet=0.3, timeout=10.0) -> int:
    """The number of calls once no call came for `quiet` seconds."""
    deadline, seen = time.monotonic() + timeout, -1
    while len(calls) != seen and time.monotonic() < deadline:
        seen = len(calls)
        time.sleep(quiet)
    return len(calls)


def test_cancel_stops_the_network_calls_within_one_step(live, client, tiny_runs):
    calls, handle = count_network_calls(live, tiny_runs)
    try:
        job = submit(client, steps=1000, n=1, guidance=0, sampler="ddim")  # unguided ddim: one call a step
        for event, data in sse(client, f"/api/jobs/{job['id']}/events"):
            if event == "progress" and data["step"] >= 3:
                cancelled = client.delete(f"/api/jobs/{job['id']}").json()
                at_cancel = len(calls)
            if event not in ("queued", "progress"):
                break
        assert (event, cancelled["state"]) == ("cancelled", "cancelled")
        assert settle(calls) - at_cancel <= 1  # at most the step in flight finishes
        assert client.get(f"/api/jobs/{job['id']}").json()["step"] < 1000
    finally:
        handle.remove()


def test_cancelling_one_job_leaves_its_batch_mate_running(live, client, pipe):
    blocker = submit(client, steps=1000, n=1)
    wait_for(lambda: client.get(f"/api/jobs/{blocker['id']}").json()["state"] == "running", what="blocker")
    a = submit(client, class_index=1, n=1, seed=5, steps=150, sampler="ddim")
    b = submit(client, class_index=2, n=2, seed=7, steps=150, sampler="ddim")
    client.delete(f"/api/jobs/{blocker['id']}")
    for event, data in sse(client, f"/api/jobs/{a['id']}/events"):
        if event == "progress" and data["step"] >= 2:
            client.delete(f"/api/jobs/{a['id']}")
        if event not in ("queued", "progress"):
            break
    assert event == "cancelled"
    _, status = follow(client, b["id"])
    assert status["state"] == "done" and status["batched_with"] == 2
    want = expected(pipe, 2, class_index=2, seed=7, steps=150, sampler="ddim")
    for x, y in zip(images_of(client, status), want, strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_job_whose_client_goes_away_is_cancelled(client):
    job = submit(client, steps=1000, n=1)
    for event, data in sse(client, f"/api/jobs/{job['id']}/events"):
        if event == "progress" and data["step"] >= 1:
            break  # leaving the `with` closes the connection
    wait_for(lambda: client.get(f"/api/jobs/{job['id']}").json()["state"] == "cancelled", 10, "the cancel")
    assert client.get(f"/api/jobs/{job['id']}").json()["message"] == "the client went away"


def test_a_full_queue_answers_429(tiny_runs):
    from fastapi.testclient import TestClient

    from noisecraft.serve import create_app

    with TestClient(create_app(ServeConfig(runs=tiny_runs, device="cpu", max_queue=2))) as c:
        ids = [c.post("/api/generate", json={"model": "digits", "steps": 1000}).json()["id"]]
        wait_for(lambda: c.get(f"/api/jobs/{ids[0]}").json()["state"] == "running", what="the first job")
        ids += [c.post("/api/generate", json={"model": "digits", "steps": 1000}).json()["id"] for _ in range(2)]
        r = c.post("/api/generate", json={"model": "digits", "steps": 1000})
        assert r.status_code == 429 and "queue is full" in r.json()["detail"] and r.headers["retry-after"]
        assert [c.delete(f"/api/jobs/{i}").json()["state"] for i in ids] == ["cancelled"] * 3


@pytest.mark.parametrize("body, needle", [
    ({"n": 17}, "at most 16 images"),
    ({"steps": 1001}, "steps must be at most 1000"),
    ({"prompt": "x" * 501}, "at most 500 characters"),
    ({"prompt": "a seven"}, "class-conditional"),
    ({"negative_prompt": "blurry"}, "negative prompt"),
    ({"class_index": 10}, "out of range"),
    ({"sampler": "magic"}, "sampler must be one of"),
    ({"model": "nope"}, "unknown model"),
    ({"model": "../digits"}, "unknown model"),
    ({"n": 0}, "greater than or equal to 1"),
    ({"seed": -1}, "greater than or equal to 0"),
    ({"steps": "many"}, "valid integer"),
    ({"colour": "red"}, "Extra inputs"),
])
def test_limits_and_bad_requests_are_422_with_a_message(client, body, needle):
    r = client.post("/api/generate", json={"model": "digits", **body})
    assert r.status_code == 422 and needle in str(r.json()["detail"]), r.text


def test_bodies_over_the_size_limit_and_non_finite_numbers_are_422(client):
    r = client.post("/api/generate", content=b'{"model": "digits", "prompt": "' + b"x" * 70_000 + b'"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and "limit of 65536 bytes" in r.json()["detail"]
    r = client.post("/api/generate", content=b'{"model": "digits", "guidance": NaN}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and "finite" in str(r.json()["detail"])


def test_only_files_under_runs_are_served(client, tiny_runs, tmp_path):
    (tmp_path / "secret.png").write_bytes(b"not yours")
    links = [tiny_runs / "out.png", tiny_runs / "outdir"]
    os.symlink(tmp_path / "secret.png", links[0])
    os.symlink(tmp_path, links[1])
    try:
        assert client.get("/files/digits/samples/final.png").headers["content-type"] == "image/png"
        assert client.get("/files/digits/log.jsonl").status_code == 200
        for path in ["/files/out.png", "/files/outdir/secret.png", "/files/../secret.png", "/files/%2e%2e/etc/passwd",
                     "/files//etc/passwd", "/files/%2Fetc%2Fpasswd", "/files/digits/../../etc/passwd",
                     "/files/digits/checkpoints/best.safetensors", "/files/digits/%00.png", "/files/digits/nope.png",
                     "/files/~/x.png", "/api/runs/outdir", "/api/runs/..", "/api/runs/%2e%2e", "/api/runs//tmp",
                     "/api/jobs/../../etc/passwd", "/static/../serve.py"]:
            r = client.get(path)
            assert r.status_code == 404, path
            assert b"not yours" not in r.content
        assert "outdir" not in [r["name"] for r in client.get("/api/runs").json()["runs"]]
    finally:
        for link in links:
            link.unlink()


def test_runs_api_gives_status_curves_grids_figures_and_config(client):
    runs = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    r = runs["digits"]
    assert (r["state"], r["step"], r["total_steps"], r["kind"], r["dataset"]) == ("finished", 4, 4, "class", "digits")
    assert r["images_per_s"] > 0 and not r["process_gone"] and not r["training_here"]
    d = client.get("/api/runs/digits").json()
    assert [x["step"] for x in d["curves"]["train"]] == [2, 4] and [x["step"] for x in d["curves"]["val"]] == [2, 4]
    assert all(x["loss"] > 0 for x in d["curves"]["train"])
    assert [g["step"] for g in d["grids"]] == [2, None]  # step 2, then the final grid
    assert client.get(d["grids"][0]["url"]).headers["content-type"] == "image/png"
    assert {"loss.png", "forward_process.png", "reverse_process.png"} <= {f["name"] for f in d["figures"]}
    assert d["config"]["model"]["unet"]["base_channels"] == 8 and d["reports"] == []


def test_a_running_run_whose_process_died_is_flagged(tmp_path):
    import json

    from fastapi.testclient import TestClient

    from noisecraft.serve import create_app

    run = tmp_path / "runs" / "group" / "killed"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "running", "step": 3, "total_steps": 9, "pid": 2**22 + 7}))
    (run / "log.jsonl").write_text('{"kind": "train", "step": 2, "loss": 0.5}\n{"kind": "tra')  # a torn last line
    (run / "eval").mkdir()
    (run / "eval" / "report.json").write_text(json.dumps({"class_accuracy": 0.9}))
    with TestClient(create_app(ServeConfig(runs=tmp_path / "runs"))) as c:
        [r] = c.get("/api/runs").json()["runs"]
        assert (r["name"], r["state"], r["process_gone"], r["kind"]) == ("group/killed", "running", True, None)
        d = c.get("/api/runs/group/killed").json()
        assert d["curves"]["train"] == [{"kind": "train", "step": 2, "loss": 0.5}]
        assert d["reports"][0]["name"] == "eval" and d["reports"][0]["report"]["class_accuracy"] == 0.9
        assert c.get("/api/models").json()["models"] == []  # no checkpoint: not a model


def test_the_checkpoint_cache_is_bounded_and_reloads_a_rewritten_checkpoint(tiny_runs):
    from noisecraft.serve.cache import PipelineCache

    cache = PipelineCache(max_bytes=1, device="cpu")  # room for one model only
    key_a, a = cache.get(tiny_runs / "digits")
    assert cache.get(tiny_runs / "digits")[1] is a  # loaded once
    cache.get(tiny_runs / "digits-b")
    assert len(cache) == 1 and key_a not in cache
    ckpt = tiny_runs / "digits-b" / "checkpoints" / "best.safetensors"
    key_b, b = cache.get(tiny_runs / "digits-b")
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 1))  # a run wrote a new `best`
    key_b2, b2 = cache.get(tiny_runs / "digits-b")
    assert key_b2 != key_b and b2 is not b and len(cache) == 1


def test_serve_binds_loopback_and_warns_otherwise(monkeypatch, tiny_runs):
    import uvicorn

    from noisecraft.serve import serve
    from noisecraft.serve.app import is_loopback

    bound = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: bound.append((host, port)))
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    with pytest.warns(UserWarning, match="anyone who can reach port 7860"):
        serve(ServeConfig(runs=tiny_runs, host="0.0.0.0"))
    from noisecraft.cli import make_parser

    args = make_parser().parse_args(["serve", "--runs", str(tiny_runs)])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
    assert bound == [("0.0.0.0", 7860)]
