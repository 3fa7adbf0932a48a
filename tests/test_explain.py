"""`noisecraft explain`: every figure a run supports is drawn from the run (index and PNGs), figures a run cannot
have are skipped or refused, the U-Net diagram's numbers are the network's, and a latent pipeline's hook is used."""
import json

import torch
from PIL import Image

from noisecraft.config import Config
from noisecraft.explain import ExplainOptions, explain
from noisecraft.explain.unet_diagram import unet_structure
from noisecraft.models import build_model, count_parameters
from noisecraft.registry import ARCHITECTURES, FIGURES

FAST = ["--steps", "3", "--n", "2"]


def test_explain_draws_every_supported_figure(tiny_runs, tmp_path, cli):
    code, _, err = cli("explain", "--checkpoint", tiny_runs / "digits", "--out", tmp_path, *FAST)
    assert code == 0, err
    index = json.loads((tmp_path / "explain.json").read_text())
    drawn = [f["name"] for f in index["figures"]]
    assert drawn == ["schedules", "forward", "reverse", "samplers", "trajectories", "guidance", "unet", "editing"]
    assert index["skipped"] == {"dit": "dit", "cross-attention": "text", "prompt-editing": "text", "fewstep": "student",
                                "latents": "autoencoder", "lora": "lora", "posthoc-ema": "posthoc"}
    assert index["adapters"] == []  # drawn by the base alone
    for f in index["figures"]:
        with Image.open(tmp_path / f["file"]) as im:
            assert im.size[0] > 200 and im.size[1] > 100
    reverse = next(f for f in index["figures"] if f["name"] == "reverse")
    assert reverse["steps"] == 3 and reverse["shown_steps"] == [1, 2, 3]
    assert sorted(reverse["sigmas"], reverse=True) == reverse["sigmas"]  # noise falls as sampling goes
    samplers = next(f for f in index["figures"] if f["name"] == "samplers")
    assert samplers["network_calls"]["heun"]["5"] == 9 and samplers["network_calls"]["ddim"]["5"] == 5


def test_explain_subset_and_refusals(tiny_runs, tmp_path, cli):
    code, _, err = cli("explain", "--checkpoint", tiny_runs / "digits", "--out", tmp_path, "--figures", "unet,schedules")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explain.json", "schedules.png", "unet.png"]
    code, _, err = cli("explain", "--checkpoint", tiny_runs / "digits", "--out", tmp_path, "--figures", "cross-attention")
    assert code == 2 and "cannot draw: cross-attention" in err
    code, _, err = cli("explain", "--checkpoint", tiny_runs / "digits", "--out", tmp_path, "--figures", "histogram")
    assert code == 2 and "figure must be one of" in err and "unet" in err


def test_unet_structure_counts_every_parameter():
    cfg = Config().model
    cfg.in_channels, cfg.image_size, cfg.num_classes = 1, 28, 10
    s = unet_structure(cfg)
    inner = sum(lv["encoder"]["params"] + lv["decoder"]["params"] for lv in s["levels"]) + s["mid"]["params"]
    assert s["total_params"] == count_parameters(build_model(cfg)) == inner + s["stem_params"]
    assert [lv["resolution"] for lv in s["levels"]] == [28, 14, 7]
    assert [lv["channels"] for lv in s["levels"]] == [64, 128, 128]
    assert [lv["encoder"]["res_blocks"] for lv in s["levels"]] == [2, 2, 2]
    assert [lv["decoder"]["res_blocks"] for lv in s["levels"]] == [3, 3, 3]
    assert [lv["encoder"]["attention"] for lv in s["levels"]] == [[], [], ["self-attn"]]  # attn_resolutions (7,)


class _LatentPipeline:
    """What explain needs of a latent pipeline: an `autoencoder`, `encode` (images in [-1, 1] -> latents) and a
    `decode` of latents; here a 2x average-pool 'autoencoder' around a real pipeline drawing (C, H/2, W/2)."""

    def __init__(self, pipe):
        self._pipe, self.autoencoder = pipe, torch.nn.AvgPool2d(2)

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def encode(self, x):
        return self.autoencoder(x)

    def decode(self, z):
        from noisecraft.data import to_uint8

        return to_uint8(torch.nn.functional.interpolate(z, scale_factor=2)).cpu()

    def stream(self, *args, **kwargs):  # samples latents of the pooled size, then decodes them
        for ev in self._pipe.stream(*args, **kwargs):
            if ev.kind == "images":
                ev.x = self.encode(ev.x)
                ev.images = self.decode(ev.x)
            yield ev


def test_latents_figure_uses_the_pipelines_autoencoder(tiny_runs, tmp_path):
    from noisecraft.pipeline import load_pipeline

    pipe = _LatentPipeline(load_pipeline(tiny_runs / "digits", "cpu"))
    index = explain(None, tmp_path, ExplainOptions(figures=("latents",), n=2, steps=2), pipe=pipe)
    assert index["figures"][0]["latent_shape"] == [1, 14, 14] and index["figures"][0]["image_shape"] == [1, 28, 28]
    assert (tmp_path / "latents.png").is_file()


def test_every_figure_is_registered_with_an_implementation():
    for name in FIGURES:
        assert callable(FIGURES.get(name).load()), name
        assert FIGURES.get(name).needs in (None, "condition", "text", "autoencoder", "student", "posthoc", "lora",
                                           *ARCHITECTURES)


def test_unet_structure_of_a_patch_network_starts_at_the_folded_resolution():
    from noisecraft.config import preset

    cfg = preset("digits").model  # 2x2 patches: levels at 14x14 and 7x7
    cfg.in_channels, cfg.image_size, cfg.num_classes = 1, 28, 10
    s = unet_structure(cfg)
    assert [lv["resolution"] for lv in s["levels"]] == [28 // cfg.patch_size, 28 // cfg.patch_size // 2]
    assert s["levels"][-1]["encoder"]["attention"] == ["self-attn"] and s["patch_size"] == 2
