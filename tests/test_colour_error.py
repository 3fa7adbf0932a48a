"""Colour error of reconstructions (issue 34): CIEDE2000 in CIELAB against scikit-image and published test data, its
mean, 95th percentile and per-hue breakdown, in `evaluate-autoencoder`'s report of a colour run (not a grey one),
and `explain` drawing colour runs in colour (grey runs as before)."""
import json
import sys

import numpy as np
import pytest
import torch
from test_latent import TINY_AE

from noisecraft.captions import COLOURS
from noisecraft.errors import UserError
from noisecraft.evaluate.autoencoder import colour_error, delta_e2000

skimage_color = pytest.importorskip("skimage.color")
RED, BLUE = (210, 47, 39), (30, 80, 160)


def solid(*colours, size=4) -> torch.Tensor:
    """uint8 (N, 3, size, size) images, each one flat colour."""
    return torch.tensor(colours, dtype=torch.uint8)[:, :, None, None].expand(-1, -1, size, size).contiguous()


def reference_de(a, b) -> float:
    """skimage's CIEDE2000 of two sRGB uint8 colours, on a 1x1 Lab pair."""
    lab = [skimage_color.rgb2lab(np.array(c, dtype=np.float64).reshape(1, 1, 3) / 255.0) for c in (a, b)]
    return float(skimage_color.deltaE_ciede2000(*lab)[0, 0])


def test_identical_images_differ_by_nothing():
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    e = colour_error(x, x.clone())
    assert e["mean"] == 0 and e["p95"] == 0
    assert all(h["mean"] == 0 and h["p95"] == 0 for h in e["by_hue"].values())


def test_a_known_pair_gives_skimages_ciede2000():
    other = (200, 60, 50)
    de = delta_e2000(solid(RED), solid(other))
    assert de.shape == (1, 4, 4)
    assert torch.allclose(de, torch.full_like(de, reference_de(RED, other)), atol=1e-5)
    assert 1 < reference_de(RED, other) < 10  # a visible but small difference, not a degenerate pair


def test_ciede2000_matches_sharma_wu_dalal_2005():
    """Pair 1 of the CIEDE2000 test data (Sharma, Wu, Dalal 2005, table 1), in L*a*b*."""
    a, b = np.array([[[50, 2.6772, -79.7751]]]), np.array([[[50, 0, -82.7485]]])
    assert float(skimage_color.deltaE_ciede2000(a, b)[0, 0]) == pytest.approx(2.0425, abs=5e-5)


def test_per_hue_breakdown_groups_images_by_dominant_colour():
    x = solid(RED, BLUE, RED, BLUE, BLUE)
    rec = x.clone()
    shifted = (40, 90, 150)
    rec[[1, 3, 4]] = solid(shifted)  # every blue image off by the same colour; the red ones exact
    e = colour_error(x, rec)
    d = reference_de(BLUE, shifted)
    assert list(e["by_hue"]) == ["red", "blue"]  # only the hues present, in COLOURS' order
    assert COLOURS.index("red") < COLOURS.index("blue")
    assert e["by_hue"]["red"] == {"images": 2, "mean": 0.0, "p95": 0.0}
    assert e["by_hue"]["blue"]["images"] == 3
    assert e["by_hue"]["blue"]["mean"] == pytest.approx(d, abs=1e-4)
    assert e["mean"] == pytest.approx(3 / 5 * d, abs=1e-4)


@pytest.mark.parametrize("wrong, p95", [(10, 1.0), (5, 0.05), (4, 0.0)])
def test_p95_is_the_95th_percentile_of_pixels(wrong, p95):
    """100 pixels of which `wrong` are off by d: the percentile sits at rank 0.95 * 99 = 94.05 of the sorted
    errors, so 10 wrong pixels give d, 5 give 0.05 d (interpolated between 0 and d) and 4 give 0; a maximum or a
    mean would not."""
    x = solid(RED, size=10)
    rec = x.clone()
    rec.view(3, 100)[:, :wrong] = torch.tensor(BLUE, dtype=torch.uint8)[:, None]
    d = reference_de(RED, BLUE)
    e = colour_error(x, rec)
    assert e["p95"] == pytest.approx(p95 * d, abs=1e-4)
    assert e["mean"] == pytest.approx(wrong / 100 * d, abs=1e-4)


def test_missing_scikit_image_is_one_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # as if not installed
    with pytest.raises(UserError, match=r'scikit-image.*pip install -e "\.\[latent\]"'):
        colour_error(solid(RED), solid(RED))


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    """30 RGB images 16x16: a square of one of five colours on white."""
    from PIL import Image

    root = tmp_path_factory.mktemp("colour") / "images"
    root.mkdir()
    palette = [RED, BLUE, (92, 158, 49), (252, 234, 43), (137, 103, 170)]
    for i in range(30):
        a = np.full((16, 16, 3), 255, np.uint8)
        a[3:13, 3:13] = palette[i % 5]
        Image.fromarray(a).save(root / f"{i:02d}.png")
    return root


def test_evaluate_autoencoder_reports_colour_error_of_a_colour_run(cli, colour_folder, tmp_path):
    from noisecraft.autoencoder.codec import load_codec
    from noisecraft.checkpoint import load_checkpoint
    from noisecraft.data import load_dataset
    from noisecraft.evaluate.autoencoder import reconstruct

    ae = tmp_path / "ae"
    assert cli("train-autoencoder", "--out", ae, "--steps", 2, *TINY_AE, "--data.dataset=folder",
               f"--data.data_root={colour_folder}", "--data.val_size=8")[0] == 0
    code, out, err = cli("evaluate-autoencoder", "--checkpoint", ae, "--no-classifier", "--device", "cpu")
    assert code == 0, err
    report = json.loads(out)
    assert report["delta_e2000"] == json.loads((ae / "eval-autoencoder" / "report.json").read_text())["delta_e2000"]
    # the same reconstructions, scored here with skimage directly
    x = load_dataset(load_checkpoint(ae, "last").config.data, "val").images
    rec = reconstruct(load_codec(ae, torch.device("cpu")), x)
    lab = [skimage_color.rgb2lab(t.permute(0, 2, 3, 1).double().numpy() / 255) for t in (x, rec)]
    de = skimage_color.deltaE_ciede2000(*lab)
    e = report["delta_e2000"]
    assert e["mean"] == pytest.approx(de.mean(), rel=1e-4)
    assert e["p95"] == pytest.approx(np.percentile(de, 95), rel=1e-4)
    assert e["mean"] > 0  # two training steps do not reconstruct colours
    assert set(e["by_hue"]) <= set(COLOURS) and sum(h["images"] for h in e["by_hue"].values()) == report["n"]


def test_evaluate_autoencoder_of_a_grey_run_has_no_colour_error(cli, tmp_path):
    ae = tmp_path / "ae"
    assert cli("train-autoencoder", "--out", ae, "--steps", 2, *TINY_AE)[0] == 0
    code, out, err = cli("evaluate-autoencoder", "--checkpoint", ae, "--no-classifier", "--device", "cpu", "--n", 8)
    assert code == 0, err
    assert "delta_e2000" not in json.loads(out)


@pytest.fixture
def drawn(monkeypatch):
    """The arrays every imshow of a figure is given."""
    from matplotlib.axes import Axes

    arrays, imshow = [], Axes.imshow

    def record(self, x, *args, **kwargs):
        arrays.append(np.asarray(x))
        return imshow(self, x, *args, **kwargs)

    monkeypatch.setattr(Axes, "imshow", record)
    return arrays


@pytest.mark.parametrize("channels", [1, 3])
def test_cross_attention_input_is_drawn_in_the_runs_colours(channels, drawn, monkeypatch, tmp_path):
    import noisecraft.explain.cross_attention as ca

    g = torch.Generator().manual_seed(0)
    noisy = torch.randint(0, 256, (2, channels, 8, 8), dtype=torch.uint8, generator=g)
    fake = {"tokens": ["<s>", "red", "heart", "</s>"], "maps": torch.rand(2, 4, 8, 8, generator=g),
            "image": noisy[-1], "noisy": noisy, "sigmas": [2.0, 0.5]}
    monkeypatch.setattr(ca, "cross_attention_maps", lambda *a, **k: fake)
    ca.draw_cross_attention(None, "a red heart", tmp_path / "ca.png", sigmas=(2.0, 0.5))
    assert (tmp_path / "ca.png").is_file()
    inputs = [drawn[0], drawn[5]]  # each row: the input, then (backdrop, map) per word
    if channels == 3:
        assert all(a.shape == (8, 8, 3) for a in inputs)
        assert np.array_equal(drawn[0], noisy[0].permute(1, 2, 0).numpy())
        assert drawn[1].shape == (8, 8, 3)  # the maps' backdrop, the final image, in colour too
    else:  # grey runs as before: one channel through the grey colour map
        assert all(a.shape == (8, 8) for a in inputs) and np.array_equal(drawn[0], noisy[0, 0].float().numpy())


def _pixel_pipeline(channels: int, folder):
    """An untrained tiny unconditional pipeline over 16x16 images: digits (grey) or `folder` (RGB)."""
    from noisecraft.config import apply_overrides, preset
    from noisecraft.diffusion.denoiser import Denoiser
    from noisecraft.models import build_model
    from noisecraft.pipeline import Pipeline

    data = {"data.dataset": "digits"} if channels == 1 else {"data.dataset": "folder", "data.data_root": str(folder)}
    cfg = apply_overrides(preset("digits"), {**data, "data.image_size": "16", "data.val_size": "8",
                                             "model.num_classes": "0", "model.unet.base_channels": "8",
                                             "model.unet.channel_mult": "1,2", "model.unet.attn_resolutions": "",
                                             "model.head_channels": "8"})
    cfg.model.in_channels, cfg.model.image_size = channels, 16
    torch.manual_seed(0)
    return Pipeline(Denoiser(build_model(cfg.model), cfg.diffusion).eval(), cfg)


@pytest.mark.parametrize("channels", [1, 3])
def test_explain_draws_a_colour_run_in_colour_and_scores_its_decodings(channels, colour_folder, drawn, monkeypatch,
                                                                       tmp_path):
    import noisecraft.explain.process as process
    from noisecraft.explain import ExplainOptions, explain
    from test_explain import _LatentPipeline

    pipe = _pixel_pipeline(channels, colour_folder)
    explain(None, tmp_path, ExplainOptions(figures=("forward", "reverse"), n=2, steps=2), pipe=pipe)
    assert len(drawn) > 10 and all(a.shape == ((16, 16, 3) if channels == 3 else (16, 16)) for a in drawn)
    titles, plot = [], process.plot_process
    monkeypatch.setattr(process, "plot_process", lambda rows, labels, title, *a, **k: (
        titles.append(title), plot(rows, labels, title, *a, **k)))
    options = ExplainOptions(figures=("latents",), n=2, steps=2)
    latents = explain(None, tmp_path, options, pipe=_LatentPipeline(pipe))["figures"][0]
    if channels == 3:
        assert latents["psnr_db"] > 0 and latents["delta_e2000"]["mean"] > 0
        assert f"mean ΔE2000 {latents['delta_e2000']['mean']:.2f}" in titles[0] and "PSNR" in titles[0]
    else:  # a grey run's figure as before
        assert "psnr_db" not in latents and "delta_e2000" not in latents and "\n" not in titles[0]


def test_judge_agreement_counts_reconstructions_put_in_their_originals_class(monkeypatch):
    """The judge's own-label prediction of each reconstruction against its original's: a stand-in judge that
    classifies by the mean red level, so changing half the reconstructions' red moves exactly those."""
    import noisecraft.evaluate.classifier as classifier
    from noisecraft.evaluate.autoencoder import judge_agreement

    class ByRed:
        def predict(self, images, own_classes=False):
            red = images[:, 0].float().mean((1, 2))
            logits = torch.stack([-(red - 64).abs(), -(red - 192).abs()], 1)  # class 0 dark red, 1 bright red
            return logits, torch.zeros(len(images), 4)

    monkeypatch.setattr(classifier, "get_classifier", lambda *a, **k: ByRed())
    x = torch.full((8, 3, 4, 4), 60, dtype=torch.uint8)
    rec = x.clone()
    rec[:2, 0] = 200  # two of eight reconstructions now bright red: judged another class
    assert judge_agreement(x, x.clone(), "emoji", "cpu") == 1.0
    assert judge_agreement(x, rec, "emoji", "cpu") == pytest.approx(6 / 8)
