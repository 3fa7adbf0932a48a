"""A text-to-image run through the server: listed as kind "text", sampled from a prompt and a negative prompt into
the pipeline's images, with the prompt in each PNG's `parameters`; a class for it, or no prompt, is a 422."""
from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("fastapi")

from test_text import HAS_TEXT, tiny_encoder  # noqa: E402  (the text tests' tiny encoder, named by path)

from noisecraft.serve import ServeConfig  # noqa: E402

pytestmark = pytest.mark.skipif(not HAS_TEXT, reason='the text extra is not installed: pip install -e ".[text]"')


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory):
    from conftest import TINY

    from noisecraft.cli import main

    tmp = tmp_path_factory.mktemp("serve_text")
    enc = tiny_encoder(tmp / "encoder")
    assert main(["train", "--preset", "digits", "--out", str(tmp / "runs" / "words"), "--steps", "2", "--no-progress",
                 *TINY, "--data.captions=on", f"--model.text_encoder={enc}", "--model.text_max_tokens=12",
                 "--model.unet.cross_attn_resolutions=14", "--train.final_figures=false"]) == 0
    return tmp / "runs"


def test_a_text_model_is_served_from_prompts(text_runs):
    from fastapi.testclient import TestClient
    from PIL import Image

    from noisecraft.imageinfo import parse_parameters
    from noisecraft.pipeline import load_pipeline
    from noisecraft.serve import create_app

    with TestClient(create_app(ServeConfig(runs=text_runs, device="cpu"))) as c:
        [m] = c.get("/api/models").json()["models"]
        assert (m["name"], m["kind"], m["classes"]) == ("words", "text", [])
        body = {"model": "words", "prompt": "a bold seven", "negative_prompt": "a thin seven", "n": 2, "seed": 3,
                "steps": 3, "guidance": 2.0}
        job = c.post("/api/generate", json=body).json()
        with c.stream("GET", f"/api/jobs/{job['id']}/events") as r:
            assert "event: done" in r.read().decode()
        status = c.get(f"/api/jobs/{job['id']}").json()
        got = [np.asarray(Image.open(io.BytesIO(c.get(u).content))) for u in status["images"]]
        want = load_pipeline(text_runs / "words", "cpu").generate(2, prompt="a bold seven", seed=3, steps=3,
                                                                   guidance=2.0, negative_prompt="a thin seven")
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b[0].numpy())
        p = parse_parameters(Image.open(io.BytesIO(c.get(status["images"][1]).content)).text["parameters"])
        assert (p["prompt"], p["negative_prompt"], p["image_seed"]) == ("a bold seven", "a thin seven", 4)
        r = c.post("/api/generate", json={"model": "words", "class_index": 3})
        assert r.status_code == 422 and "takes a prompt" in r.json()["detail"]
        r = c.post("/api/generate", json={"model": "words"})
        assert r.status_code == 422 and "needs a prompt" in r.json()["detail"]


def test_prompt_syntax_is_served_and_a_malformed_prompt_is_a_422_naming_the_column(text_runs):
    from fastapi.testclient import TestClient

    from noisecraft.serve import create_app

    with TestClient(create_app(ServeConfig(runs=text_runs, device="cpu"))) as c:
        body = {"model": "words", "prompt": "[a (bold:1.3) seven:the digit 2 of four:0.5]", "n": 1, "steps": 3}
        job = c.post("/api/generate", json=body).json()
        with c.stream("GET", f"/api/jobs/{job['id']}/events") as r:
            assert "event: done" in r.read().decode()
        for bad, message in [({"prompt": "a (bold seven"}, "column 3: '(' is never closed"),
                             ({"prompt": "a seven", "negative_prompt": "(thin:nan)"}, "column 7: weight 'nan'"),
                             ({"prompt": "[a three:a seven:8]"}, "column 18: when = 8 is past the 3 sampling steps")]:
            r = c.post("/api/generate", json={"model": "words", "n": 1, "steps": 3, **bad})
            assert r.status_code == 422 and message in r.json()["detail"], r.json()
