"""The diffusion transformer (model.arch = dit): adaLN-zero starts every block as the identity and the network at
zero, positions are the closed-form 2D sin-cos, the null class and padded prompt tokens behave as in the U-Net,
bad sizes get one error line, and a DiT run trains, samples with every sampler, edits, distils and draws its
diagram through the same CLI as a U-Net run; a text DiT draws its cross-attention and is served from prompts."""
from __future__ import annotations

import dataclasses
import io
import json
import math

import numpy as np
import pytest
import torch

from conftest import TINY_RUN
from noisecraft.config import DiTConfig, ModelConfig
from noisecraft.models import build_model
from noisecraft.models.dit import DiTBlock, TokenCrossAttention, sincos_positions_2d
from noisecraft.registry import SAMPLERS

TINY_DIT = ["--model.arch=dit", "--model.dit.width=16", "--model.head_channels=8", "--model.patch_size=4",
            "--model.dit.depth=2", "--model.conv_stem=4"]


def _dit(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    own = {k: kw.pop(k) for k in list(kw) if k in {f.name for f in dataclasses.fields(DiTConfig)}}
    cfg = dict(arch="dit", in_channels=1, image_size=28, num_classes=10, head_channels=8, patch_size=4, dropout=0.0)
    return build_model(ModelConfig(**{**cfg, **kw}, dit=DiTConfig(**{"width": 16, "depth": 2, **own}))).eval()


def _randomise(net: torch.nn.Module) -> None:
    """Give the zero-initialised gates and output layers weights, as training would."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            if not p.abs().sum():
                p.normal_(0, 0.1)


@pytest.mark.parametrize("conv_stem", [0, 4])
def test_the_network_starts_at_zero_and_each_block_as_the_identity(conv_stem):
    net = _dit(conv_stem=conv_stem)
    x = torch.randn(3, 1, 28, 28)
    out = net(x, torch.tensor([1.0, 500.0, 999.0]), torch.tensor([0, 3, 10]))
    assert out.shape == x.shape and not out.abs().any()  # the prediction is zero until trained
    block = net.blocks[0]
    assert isinstance(block, DiTBlock)
    tokens, c = torch.randn(3, 49, 16), torch.randn(3, 16)
    torch.testing.assert_close(block(tokens, c, None), tokens)  # gates at zero: the identity


@pytest.mark.parametrize("depth", [4, 5])
def test_long_skips_join_mirrored_blocks_and_start_unread(depth):
    net = _dit(depth=depth, long_skip=True)
    assert [k for k in net.state_dict() if k.startswith("skips.")] == ["skips.0.weight", "skips.0.bias",
                                                                         "skips.1.weight", "skips.1.bias"]
    assert not any(k.startswith("skips.") for k in _dit(depth=depth).state_dict())  # off: old checkpoints load
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([1.0, 500.0, 999.0]), torch.tensor([0, 3, 10])
    assert not net(x, t, y).abs().any()  # still zero until trained
    plain = _dit(depth=depth)
    _randomise(plain)  # trained blocks, and the skips as initialised
    assert net.load_state_dict(plain.state_dict(), strict=False).missing_keys == [k for k in net.state_dict()
                                                                                  if k.startswith("skips.")]
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, y), plain(x, t, y))  # the skips start unread: the plain DiT
        seen = {}
        hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, (i[0], o)))
                 for n, m in [*((f"block{i}", b) for i, b in enumerate(net.blocks)),
                              *((f"skip{j}", s) for j, s in enumerate(net.skips))]]
        net(x, t, y)
        for h in hooks:
            h.remove()
        for j, first in enumerate([1, 0]):  # the second half's j-th block reads first-half block 1 - j's output
            skip_in, skip_out = seen[f"skip{j}"]
            torch.testing.assert_close(skip_in[..., 16:], seen[f"block{first}"][1])  # (B, N, D) of (B, N, 2D)
            torch.testing.assert_close(skip_out, seen[f"block{depth - 2 + j}"][0])
        net.skips[0].weight[:, 16:].normal_(0, 0.1)
        assert not torch.allclose(net(x, t, y), plain(x, t, y))  # once trained, the skip counts


def test_sincos_positions_are_the_closed_form_per_axis():
    pos = sincos_positions_2d(3, 8)  # per axis 4 channels: cos(r), cos(r / 100), sin(r), sin(r / 100)
    assert pos.shape == (9, 8)
    for r in range(3):
        for c in range(3):
            want = [math.cos(r), math.cos(r / 100), math.sin(r), math.sin(r / 100),
                    math.cos(c), math.cos(c / 100), math.sin(c), math.sin(c / 100)]
            torch.testing.assert_close(pos[3 * r + c], torch.tensor(want), atol=1e-6, rtol=0)
    assert len({tuple(p.tolist()) for p in pos}) == 9  # every token has its own position


def test_learned_positions_are_weights_and_fixed_ones_are_not_saved():
    assert "pos" in _dit(pos_embed="learned").state_dict()
    assert "pos" not in _dit().state_dict()  # rebuilt from the config: old and new checkpoints need not carry it


def test_no_label_is_the_null_class_and_padding_tokens_change_nothing():
    net = _dit(context_dim=12)
    _randomise(net)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([10.0, 600.0])
    with torch.no_grad():
        torch.testing.assert_close(net(x, t), net(x, t, torch.tensor([10, 10])))
        context, mask = torch.randn(2, 5, 12), torch.tensor([[True, True, False, False, False]] * 2)
        a = net(x, t, None, context, mask)
        context[:, 2:] = torch.randn(2, 3, 12) * 100  # what the mask hides
        torch.testing.assert_close(net(x, t, None, context, mask), a)
        assert not torch.allclose(net(x, t, None, context, None), a)  # unmasked, those tokens count


def test_cross_attention_records_maps_on_the_token_grid():
    net = _dit(context_dim=12)
    blocks = [m for m in net.modules() if isinstance(m, TokenCrossAttention)]
    assert len(blocks) == 2
    blocks[0].maps = []
    net(torch.randn(2, 1, 28, 28), torch.tensor([1.0, 2.0]), None, torch.randn(2, 5, 12), torch.ones(2, 5).bool())
    probs, grid = blocks[0].maps[0]
    assert probs.shape == (2, 49, 5) and grid == (7, 7)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 49))


@pytest.mark.parametrize("bad, message", [
    (["--model.patch_size=5"], "patch_size=5 must divide the image size 28"),
    (["--model.head_channels=12"], "must be a multiple of model.head_channels=12"),
    (["--model.dit.pos_embed=rope"], "model.dit.pos_embed must be one of sincos, learned"),
    (["--model.arch=vit"], "model.arch must be one of unet, dit"),
    (["--model.dit.depth=0"], "model.dit.depth must be"),
    (["--model.dit.long_skip=true", "--model.dit.depth=1"], "model.dit.long_skip needs model.dit.depth >= 2"),
    (["--model.unet.channel_mult=1,2"], "model.unet.channel_mult is not a setting of model.arch=dit; its own are "
                                        "model.dit.{width, depth, mlp_ratio, pos_embed, long_skip}"),
])
def test_bad_transformer_settings_get_one_error_line(cli, tmp_path, bad, message):
    code, _, err = cli("train", "--preset", "digits", "--out", tmp_path / "r", "--steps", 2, "--no-progress",
                       *TINY_RUN, *TINY_DIT, *bad)
    assert code == 2 and message in err and err.count("\n") == 1, err


@pytest.fixture(scope="module")
def dit_run(tmp_path_factory):
    from noisecraft.cli import main

    out = tmp_path_factory.mktemp("dit") / "run"
    assert main(["train", "--preset", "digits-dit", "--out", str(out), "--steps", "120", "--no-progress", *TINY_RUN,
                 *TINY_DIT, "--train.lr=3e-3", "--train.batch_size=16", "--train.log_every=5", "--train.val_every=60",
                 "--train.ckpt_every=60", "--train.num_threads=1", "--train.final_figures=false"]) == 0
    return out


def test_a_dit_loss_falls_by_a_quarter_on_real_digits(dit_run):
    losses = [r["loss"] for r in map(json.loads, (dit_run / "log.jsonl").read_text().splitlines())
              if r["kind"] == "train"]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3  # each a mean over 5 steps' batches
    assert last < 0.75 * first, losses


def test_a_dit_run_samples_with_every_sampler_and_draws_its_diagram(dit_run, cli, tmp_path):
    from noisecraft.pipeline import load_pipeline

    pipe = load_pipeline(dit_run, "cpu")
    for name in SAMPLERS:
        images = pipe.generate(n=2, class_index=3, sampler=name, steps=3, seed=0)
        assert images.shape == (2, 1, 28, 28) and images.dtype == torch.uint8, name
    code, _, err = cli("explain", "--checkpoint", dit_run, "--out", tmp_path / "x", "--figures", "dit")
    assert code == 0, err
    index = json.loads((tmp_path / "x" / "explain.json").read_text())
    assert index["figures"][0]["tokens"] == 49 and index["figures"][0]["depth"] == 2
    code, _, err = cli("explain", "--checkpoint", dit_run, "--out", tmp_path / "y", "--figures", "unet")
    assert code == 2 and "cannot draw: unet" in err


def test_a_dit_run_edits_and_distils(dit_run, cli, tmp_path):
    from PIL import Image

    Image.new("L", (28, 28), 0).save(tmp_path / "in.png")
    code, _, err = cli("edit", "--checkpoint", dit_run, "--image", tmp_path / "in.png", "--mask-half", "top",
                       "--class", 1, "--n", 2, "--steps", 3, "--out", tmp_path / "edit", "--device", "cpu")
    assert code == 0 and (tmp_path / "edit" / "00001.png").is_file(), err
    code, _, err = cli("distill", "--checkpoint", dit_run, "--out", tmp_path / "cd", "--steps", 2, "--no-progress",
                       "--train.num_threads=1")
    assert code == 0, err
    assert json.loads((tmp_path / "cd" / "config.json").read_text())["model"]["arch"] == "dit"



def test_a_text_dit_attends_to_the_prompt_and_the_server_draws_from_it(tmp_path, cli):
    """Text-to-image on a transformer: a 4-step run with a tiny local encoder, the cross-attention figure on the
    token grid, and the web server listing the run and drawing what the pipeline draws for a prompt."""
    pytest.importorskip("fastapi")
    from test_text import HAS_TEXT, tiny_encoder

    if not HAS_TEXT:
        pytest.skip('the text extra is not installed: pip install -e ".[text]"')
    from fastapi.testclient import TestClient
    from PIL import Image

    from noisecraft.pipeline import load_pipeline
    from noisecraft.serve import ServeConfig, create_app

    enc, run = tiny_encoder(tmp_path / "encoder"), tmp_path / "runs" / "text-dit"
    code, _, err = cli("train", "--preset", "digits-dit", "--out", run, "--steps", 4, "--no-progress", *TINY_RUN,
                       *TINY_DIT, "--data.captions=on", f"--model.text_encoder={enc}", "--model.text_max_tokens=12",
                       "--train.final_figures=false", "--train.num_threads=1")
    assert code == 0, err
    code, _, err = cli("explain", "--checkpoint", run, "--out", tmp_path / "x", "--figures", "cross-attention,dit",
                       "--prompt", "a thin two", "--steps", 2)
    assert code == 0 and (tmp_path / "x" / "cross-attention.png").is_file(), err
    with TestClient(create_app(ServeConfig(runs=tmp_path / "runs", device="cpu"))) as c:
        [m] = c.get("/api/models").json()["models"]
        assert (m["name"], m["kind"]) == ("text-dit", "text")
        job = c.post("/api/generate", json={"model": "text-dit", "prompt": "a thin two", "n": 2, "steps": 2,
                                            "seed": 3}).json()
        with c.stream("GET", f"/api/jobs/{job['id']}/events") as r:
            assert "event: done" in r.read().decode()
        status = c.get(f"/api/jobs/{job['id']}").json()
        got = [np.asarray(Image.open(io.BytesIO(c.get(u).content))) for u in status["images"]]
    pipe = load_pipeline(run, "cpu")
    want = pipe.generate(2, prompt="a thin two", steps=2, seed=3)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b[0].numpy())
    other = pipe.generate(2, prompt="a bold nine leaning right", steps=2, seed=3)  # the same noise, another prompt
    assert not torch.equal(other, want)
