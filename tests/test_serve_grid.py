"""The grid API: POST /api/grid plans and queues a grid (422 for a bad axis or value, naming it, before anything
is drawn), its event stream sends each cell as it finishes (a PNG with the cell's parameters), then the sheet;
a grid job cancels like any job."""
from __future__ import annotations

import io

import pytest

pytest.importorskip("fastapi")

from serve_support import sse


def test_options_list_the_grid_axes(client):
    names = [a["name"] for a in client.get("/api/options").json()["grid_axes"]]
    assert names[:3] == ["sampler", "steps", "guidance"] and "prompt_sr" in names and "checkpoint" in names


def test_a_grid_streams_its_cells_as_they_finish_then_the_sheet(client):
    from PIL import Image

    from noisecraft.imageinfo import parse_parameters

    body = {"model": "digits", "x": "steps=1,2", "y": "guidance=0-2 [2]", "z": "checkpoint=digits,digits-b",
            "class_index": 4, "n": 2, "seed": 11}
    r = client.post("/api/grid", json=body)
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["grid"]["shape"] == {"z": 2, "y": 2, "x": 2} and len(started["grid"]["cells"]) == 8
    events = list(sse(client, started["events"]))
    kinds = [k for k, _ in events]
    assert kinds[-1] == "done" and kinds.count("cell") == 8 and "progress" in kinds
    assert kinds.index("cell") < max(i for i, k in enumerate(kinds) if k == "progress")  # cells arrive during the run
    cells = {d["index"]: d for k, d in events if k == "cell"}
    last = cells[7]
    assert last["values"] == {"checkpoint": "digits-b", "guidance": "2", "steps": "2"}
    png = client.get(last["url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    params = parse_parameters(Image.open(io.BytesIO(png.content)).info["parameters"])
    assert (params["steps"], params["guidance"], params["seed"], params["class"], params["model"],
            params["batch_size"]) == (2, 2.0, 11, 4, "digits-b", 2)
    sheet = client.get(events[-1][1]["sheet"])
    assert sheet.status_code == 200 and Image.open(io.BytesIO(sheet.content)).size[0] > 2 * 56
    status = client.get(started["status"]).json()
    assert status["state"] == "done" and status["cells_done"] == 8


@pytest.mark.parametrize("axes, needle", [
    ({"x": "stepz=1,2"}, "grid axis must be one of"),
    ({"x": "sampler=ddim,plms"}, "'plms'"),
    ({"x": "class=1,99"}, "grid axis class=99"),
    ({"x": "steps=1-40", "y": "seed=1-40"}, "the grid has 1600 cells"),
    ({"x": "steps=10,5000"}, "grid axis steps=5000: steps must be at most 1000"),
    ({"x": "checkpoint=digits,nope"}, "grid axis checkpoint=nope: unknown model 'nope'"),
    ({}, "a grid needs at least one axis"),
])
def test_a_bad_grid_is_422_naming_the_axis_and_value(live, client, axes, needle):
    jobs = len(live.service.queue.jobs())
    r = client.post("/api/grid", json={"model": "digits", "n": 1, **axes})
    assert r.status_code == 422 and needle in r.json()["detail"], r.text
    assert len(live.service.queue.jobs()) == jobs  # refused before anything was queued


def test_a_grid_is_cancelled_like_any_job(client):
    r = client.post("/api/grid", json={"model": "digits", "x": "steps=400,500", "class_index": 1, "n": 2})
    assert r.status_code == 202, r.text
    job = r.json()
    for kind, data in sse(client, job["events"]):
        if kind == "progress":
            assert client.delete(job["status"]).status_code == 200
        if kind in ("done", "cancelled", "error"):
            break
    assert kind == "cancelled"
    assert client.get(job["status"]).json()["state"] == "cancelled"
