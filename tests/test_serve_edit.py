"""POST /api/edit on a real server: JSON (base64) and multipart bodies give the library's images for the same
seed, with the known half kept; an edit follows the same job, event and cancel flow as a generation and shares
the queue; bad images, masks, strengths and paths outside --runs get a 4xx with the reason, never a 5xx."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serve_support import follow, sse, wait_for  # noqa: E402



def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def digit(tiny_runs):
    from noisecraft.data import load_dataset
    from noisecraft.pipeline import load_pipeline

    pipe = load_pipeline(tiny_runs / "digits", "cpu")
    return pipe, load_dataset(pipe.config.data, "val").images[5, 0].numpy()


def images_of(client, status) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(io.BytesIO(client.get(u).content))) for u in status["images"]]


BOTTOM = np.zeros((28, 28), np.uint8)
BOTTOM[14:] = 255


def test_json_and_multipart_edits_give_the_librarys_images(client, digit):
    pipe, image = digit
    body = {"model": "digits", "class_index": 4, "seed": 11, "n": 2, "steps": 3,
            "image": "data:image/png;base64," + base64.b64encode(png(image)).decode(),
            "mask": base64.b64encode(png(BOTTOM)).decode()}
    r = client.post("/api/edit", json=body)
    assert r.status_code == 202, r.text
    events, status = follow(client, r.json()["id"])
    assert status["state"] == "done" and [e for e, _ in events].count("progress") >= 1
    got = images_of(client, status)
    want = pipe.inpaint(torch.from_numpy(image)[None], torch.from_numpy(BOTTOM > 0)[None, None], class_index=4,
                        seed=11, n=2, steps=3)
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, w[0].numpy()) and np.array_equal(g[:14], image[:14])
    done = events[-1][1]["images"][0]
    assert done["settings"]["denoising_strength"] == 1.0 and done["settings"]["mask"] == "rect 0,14,28,14"

    files = {"image": ("in.png", png(image), "image/png"), "mask": ("mask.png", png(BOTTOM), "image/png")}
    form = {"model": "digits", "class_index": "4", "seed": "11", "n": "2", "steps": "3"}
    r = client.post("/api/edit", data=form, files=files)
    assert r.status_code == 202, r.text
    _, status = follow(client, r.json()["id"])
    assert all(np.array_equal(a, b) for a, b in zip(images_of(client, status), got, strict=True))


def test_an_edit_waits_in_the_generations_queue_and_cancels_like_one(client, digit):
    """One queue for edits and generations: an edit posted behind a running generation waits, queued; once it
    runs, DELETE stops it within its steps, as a generation's cancel does."""
    _, image = digit
    blocker = client.post("/api/generate", json={"model": "digits", "steps": 1000, "n": 1}).json()
    wait_for(lambda: client.get(f"/api/jobs/{blocker['id']}").json()["state"] == "running", what="the generation")
    body = {"model": "digits", "class_index": 4, "seed": 1, "n": 1, "steps": 1000,
            "image": base64.b64encode(png(image)).decode(), "mask": base64.b64encode(png(BOTTOM)).decode()}
    r = client.post("/api/edit", json=body)
    assert r.status_code == 202, r.text
    edit = r.json()["id"]
    assert client.get(f"/api/jobs/{edit}").json()["state"] == "queued"  # behind the generation
    client.delete(f"/api/jobs/{blocker['id']}")
    cancelled = None
    for event, data in sse(client, f"/api/jobs/{edit}/events"):
        if event == "progress" and data["step"] >= 2 and cancelled is None:
            cancelled = client.delete(f"/api/jobs/{edit}").json()
        if event not in ("queued", "progress"):
            break
    assert (event, cancelled["state"]) == ("cancelled", "cancelled")
    assert client.get(f"/api/jobs/{edit}").json()["step"] < 1000


def test_img2img_of_a_file_under_runs_and_refusals(client, digit, tiny_runs):
    _, image = digit
    from PIL import Image

    Image.fromarray(image).save(tiny_runs / "digits" / "edit-source.png")
    r = client.post("/api/edit", json={"model": "digits", "image_path": "digits/edit-source.png", "strength": 0.5,
                                       "steps": 2})
    assert r.status_code == 202, r.text
    _, status = follow(client, r.json()["id"])
    assert status["state"] == "done" and len(status["images"]) == 1

    ok = base64.b64encode(png(image)).decode()
    bad = [
        ({"model": "digits", "image": base64.b64encode(b"hello, not a png").decode()}, 422, "not an image"),
        ({"model": "digits", "image": "%%% not base64"}, 422, "not base64"),
        ({"model": "digits", "image": ok, "mask": base64.b64encode(png(BOTTOM[:10, :10])).decode()}, 422,
         "mask is 10x10"),
        ({"model": "digits", "image": ok, "mask": base64.b64encode(png(BOTTOM * 0)).decode()}, 422, "no pixel"),
        ({"model": "digits", "image": ok, "strength": 0}, 422, "strength"),
        ({"model": "digits", "image": ok, "strength": 1.5}, 422, "strength"),
        ({"model": "digits", "image_path": "../../etc/passwd"}, 404, "under the runs folder"),
        ({"model": "digits", "image_path": "/etc/passwd"}, 404, "under the runs folder"),
        ({"model": "digits", "image": ok, "image_path": "digits/edit-source.png"}, 422, "not both"),
        ({"model": "digits"}, 422, "give the image"),
        ({"model": "nope", "image": ok}, 422, "unknown model"),
    ]
    for body, code, message in bad:
        r = client.post("/api/edit", json=body)
        assert r.status_code == code and message in r.text, (body, r.status_code, r.text)
    r = client.post("/api/edit", content=b"image=1", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = client.post("/api/edit", data={"model": "digits"}, files={"other": ("x.png", png(image), "image/png")})
    assert r.status_code == 422 and "only image, mask take files" in r.text


def test_an_edit_too_large_for_the_body_limit_is_refused_before_it_is_read(client):
    r = client.post("/api/edit", json={"model": "digits", "image": "A" * (9 * 1024 * 1024)})
    assert r.status_code == 422 and "over the limit" in r.text
