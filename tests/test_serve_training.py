"""Training from the API: a start launches `python -m noisecraft train` writing a normal run directory, stop sends
SIGINT (the trainer saves `last`, status interrupted), resume continues it to the end; data is read only from
under the data root, and an existing run is never started over."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi")

from conftest import TINY  # noqa: E402

from noisecraft.serve import ServeConfig  # noqa: E402

OVERRIDES = {a[2:].split("=")[0]: a.split("=", 1)[1] for a in TINY} | {
    "train.final_figures": "false", "train.num_threads": "1", "train.ckpt_every": "1000", "train.log_every": "1"}


def wait_run(client, name, predicate, timeout=120.0, what="the run"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/api/runs/{name}")
        if r.status_code == 200 and predicate(r.json()):
            return r.json()
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {client.get(f'/api/runs/{name}').text[:500]}")


def test_start_stop_and_resume_training_from_the_api(tmp_path):
    from fastapi.testclient import TestClient

    from noisecraft.serve import create_app

    (tmp_path / "runs").mkdir()
    (tmp_path / "data" / "mine").mkdir(parents=True)
    with TestClient(create_app(ServeConfig(runs=tmp_path / "runs", data_root=tmp_path / "data"))) as c:
        r = c.post("/api/train", json={"name": "t", "preset": "digits", "steps": 10_000, "overrides": OVERRIDES})
        assert r.status_code == 202, r.text
        d = wait_run(c, "t", lambda d: d["state"] == "running" and (d["step"] or 0) >= 2, what="training to run")
        assert d["training_here"] and d["total_steps"] == 10_000 and d["kind"] == "class"
        assert c.post("/api/train", json={"name": "t"}).status_code == 409  # never trains into a run by accident
        assert c.post("/api/runs/t/stop").status_code == 200
        d = wait_run(c, "t", lambda d: d["state"] == "interrupted" and not d["training_here"], what="the stop")
        stopped = d["step"]
        assert stopped >= 2 and d["has_checkpoint"]  # SIGINT saved `last` at the step it stopped
        assert c.post("/api/runs/t/stop").status_code == 409
        assert c.post("/api/runs/t/resume", json={"steps": stopped + 2}).status_code == 202
        d = wait_run(c, "t", lambda d: d["state"] == "finished" and not d["training_here"], what="the resume")
        assert d["step"] == stopped + 2 and d["curves"]["train"][-1]["step"] == stopped + 2
        assert "stopped by SIGINT" in c.get(d["train_log_url"]).text


@pytest.mark.parametrize("body, status, needle", [
    ({"name": "../x"}, 422, "name must be"),
    ({"name": ".hidden"}, 422, "name must be"),
    ({"name": "a", "dataset": "folder", "data_dir": "../outside"}, 422, "not a folder under the data root"),
    ({"name": "a", "dataset": "folder", "data_dir": "/etc"}, 422, "not a folder under the data root"),
    ({"name": "a", "dataset": "folder", "data_dir": "escape"}, 422, "not a folder under the data root"),
    ({"name": "a", "dataset": "folder", "data_dir": "missing"}, 422, "not a folder under the data root"),
    ({"name": "a", "dataset": "imagenet"}, 422, "dataset must be one of"),
    ({"name": "a", "preset": "huge"}, 422, "preset must be one of"),
    ({"name": "a", "overrides": {"data.data_root": "/"}}, 422, "not allowed"),
    ({"name": "a", "overrides": {"download": "true"}}, 422, "not allowed"),
    ({"name": "a", "overrides": {"train.lr": "-1"}}, 422, "train.lr"),
    ({"name": "a", "overrides": {"nope.field": "1"}}, 422, "nope"),
    ({"name": "digits"}, 409, "already exists"),
])
def test_training_requests_are_checked_before_anything_starts(tmp_path, tiny_runs, body, status, needle):
    import os
    import shutil

    from fastapi.testclient import TestClient

    from noisecraft.serve import create_app

    shutil.copytree(tiny_runs / "digits", tmp_path / "runs" / "digits")
    (tmp_path / "data").mkdir()
    os.symlink("/etc", tmp_path / "data" / "escape")  # a symlink out of the data root
    with TestClient(create_app(ServeConfig(runs=tmp_path / "runs", data_root=tmp_path / "data"))) as c:
        r = c.post("/api/train", json=body)
        assert r.status_code == status and needle in r.json()["detail"], r.text
        assert not c.app.state.service.training.managed()


def test_a_training_that_fails_before_its_first_status_shows_as_failed(tmp_path):
    from fastapi.testclient import TestClient

    from noisecraft.serve import create_app

    (tmp_path / "runs").mkdir()
    (tmp_path / "data" / "empty").mkdir(parents=True)  # a folder with no images: the trainer stops at loading
    with TestClient(create_app(ServeConfig(runs=tmp_path / "runs", data_root=tmp_path / "data"))) as c:
        r = c.post("/api/train", json={"name": "e", "dataset": "folder", "data_dir": "empty"})
        assert r.status_code == 202, r.text
        d = wait_run(c, "e", lambda d: d["state"] == "failed", timeout=60, what="the failure")
        assert d["error"].startswith("error:") and not d["training_here"]
