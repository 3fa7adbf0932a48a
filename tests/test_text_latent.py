"""Text-to-image in a learned latent space (issue 22): one composed pipeline (text conditioner + autoencoder codec),
trained, sampled, explained, evaluated and served like a pixel text run. Tiny networks and a tiny local encoder."""
import json

import pytest
import torch
from PIL import Image
from test_latent import TINY_AE
from test_text import HAS_TEXT, tiny_encoder

from noisecraft.errors import UserError

pytestmark = pytest.mark.skipif(not HAS_TEXT, reason='the text extra is not installed: pip install -e ".[text]"')

TINY_TEXT_LATENT = ["--preset", "digits64-text-latent", "--image-size", 16, "--model.unet.base_channels=8",
                    "--model.unet.channel_mult=1,2", "--model.unet.attn_resolutions=2",
                    "--model.unet.cross_attn_resolutions=4,2",
                    "--model.head_channels=8", "--model.text_max_tokens=12", "--sample.steps=2",
                    "--train.batch_size=8", "--train.log_every=2", "--train.val_every=2", "--train.ckpt_every=2",
                    "--train.sample_every=100000", "--data.val_size=16", "--train.warmup_steps=1", "--no-progress"]


@pytest.fixture(scope="module")
def text_latent(tmp_path_factory):
    """A digits autoencoder (16x16 -> 4x4x2) and a 4-step text-to-image run in its latents, in one --runs folder."""
    from noisecraft.cli import main

    root = tmp_path_factory.mktemp("tl")
    enc = tiny_encoder(root / "encoder")
    runs = root / "runs"
    assert main(["train-autoencoder", "--out", str(runs / "ae"), "--steps", "2", *map(str, TINY_AE)]) == 0
    assert main(["train", "--autoencoder", str(runs / "ae"), "--out", str(runs / "tl"), "--steps", "4",
                 f"--model.text_encoder={enc}", *map(str, TINY_TEXT_LATENT)]) == 0
    return runs


def test_a_text_latent_run_trains_on_captions_in_latent_space(text_latent):
    run = text_latent / "tl"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["context_dim"] == 16 and cfg["model"]["num_classes"] == 0
    assert cfg["autoencoder"]["latent"] and cfg["autoencoder"]["image_channels"] == 1
    assert (cfg["model"]["in_channels"], cfg["model"]["image_size"]) == (2, 4)  # the network sees 4x4x2 latents
    for name in ("latents.safetensors", "text_embeddings.safetensors", "autoencoder", "cross_attention.png",
                 "samples/final.png"):
        assert (run / name).exists(), name
    assert Image.open(run / "cross_attention.png").size[0] > 100
    losses = [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["kind"] == "train"]
    assert len(losses) == 2 and all(v == v for v in losses)


def test_prompts_sample_decoded_images_with_guidance_and_a_negative_prompt(text_latent, cli, tmp_path):
    from noisecraft.pipeline import load_pipeline

    run = text_latent / "tl"
    code, _, err = cli("sample", "--checkpoint", run, "--prompt", "a bold seven", "--n", 2, "--steps", 2,
                       "--guidance", 2, "--negative-prompt", "a thin seven", "--out", tmp_path / "s")
    assert code == 0, err
    assert json.loads((tmp_path / "s" / "prompts.json").read_text()) == ["a bold seven"] * 2
    png = Image.open(sorted((tmp_path / "s").glob("0*.png"))[0])
    assert png.size == (16, 16) and "a bold seven" in png.text["parameters"]
    pipe = load_pipeline(run, "cpu")
    assert pipe.kind == "text" and pipe.autoencoder is not None and pipe.image_shape == (1, 16, 16)
    a = pipe.generate(prompt="a bold seven", n=2, steps=2, guidance=2.0, seed=3)
    b = pipe.generate(prompt="a bold seven", n=2, steps=2, guidance=2.0, seed=3, negative_prompt="a thin seven")
    assert a.shape == (2, 1, 16, 16) and torch.equal(a, pipe.generate(prompt="a bold seven", n=2, steps=2,
                                                                     guidance=2.0, seed=3))
    assert not torch.equal(a, b)  # the negative prompt is what guidance contrasts with
    previews = [ev.preview for ev in pipe.stream(prompt="a two", n=1, steps=2, preview_every=1) if ev.kind == "step"]
    assert [p.shape for p in previews] == [(1, 1, 16, 16)] * 2  # x0 estimates decoded live


def test_explain_draws_cross_attention_over_the_latent_grid(text_latent, tmp_path):
    from noisecraft.explain import ExplainOptions, explain
    from noisecraft.explain.cross_attention import cross_attention_maps
    from noisecraft.pipeline import load_pipeline

    pipe = load_pipeline(text_latent / "tl", "cpu")
    r = cross_attention_maps(pipe, "a bold seven", sigmas=(2.0, 0.5))
    assert r["maps"].shape == (2, len(r["tokens"]), 16, 16) and r["noisy"].shape == (2, 1, 16, 16)
    assert torch.allclose(r["maps"].sum(1), torch.ones(2, 16, 16), atol=1e-4)  # attention over tokens sums to one
    index = explain(None, tmp_path, ExplainOptions(figures=("cross-attention", "latents"), n=2, steps=2), pipe=pipe)
    assert [f["name"] for f in index["figures"]] == ["cross-attention", "latents"]


def test_evaluate_judges_prompts_of_a_text_latent_run(text_latent, cli, tmp_path):
    code, stdout, err = cli("evaluate", "--checkpoint", text_latent / "tl", "--n", 4, "--steps", 2,
                            "--no-inception", "--no-progress", "--out", tmp_path / "eval")
    assert code == 0, err
    report = json.loads(stdout[: stdout.rindex("}") + 1])
    assert report["text"]["n"] == 4 and report["text"]["named_n"] == 4 and "fd" in report["offline"]["generated"]


def test_the_server_offers_and_draws_a_text_latent_model(text_latent):
    from fastapi.testclient import TestClient

    from noisecraft.serve import ServeConfig, create_app

    with TestClient(create_app(ServeConfig(runs=text_latent, device="cpu"))) as client:
        models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
        assert set(models) == {"tl"} and (models["tl"]["kind"], models["tl"]["image_size"]) == ("text", 16)
        assert models["tl"]["channels"] == 1
        bad = client.post("/api/generate", json={"model": "tl", "class_index": 3, "n": 1})
        assert bad.status_code == 422 and "takes a prompt" in bad.text
        long = client.post("/api/generate", json={"model": "tl", "prompt": "x" * 10_000, "n": 1})
        assert long.status_code == 422
        job = client.post("/api/generate", json={"model": "tl", "prompt": "a two", "n": 2, "steps": 2, "seed": 1})
        assert job.status_code == 202, job.text
        events = client.get(job.json()["events"]).text
        assert "event: done" in events
        png = client.get(f"/api/jobs/{job.json()['id']}/images/1.png")
        im = Image.open(__import__("io").BytesIO(png.content))
        assert im.size == (16, 16) and "Image seed: 2" in im.text["parameters"]


def test_bad_input_to_a_text_latent_run_is_one_clear_error(text_latent, cli, tmp_path):
    run = text_latent / "tl"
    code, _, err = cli("sample", "--checkpoint", run, "--class", 3, "--out", tmp_path / "a")
    assert code == 2 and err.startswith("error: this model is text-to-image: it takes a prompt")
    code, _, err = cli("sample", "--checkpoint", run, "--prompt", "", "--out", tmp_path / "b")
    assert code == 2 and "needs a prompt" in err, err
    code, _, err = cli("sample", "--checkpoint", run, "--prompt", "a seven " * 1250, "--out", tmp_path / "c")
    assert code == 2 and "at most 2000 characters" in err and err.count("\n") == 1, err
    assert not any((tmp_path / d).exists() for d in "abc")  # nothing written half-way
    from noisecraft.pipeline import load_pipeline

    with pytest.raises(UserError, match="lo < hi"):
        load_pipeline(run, "cpu").prepare(prompt="a two", guidance=2.0, guidance_interval=(5.0, 1.0))
