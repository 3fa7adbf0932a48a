"""Latent diffusion: the KL autoencoder and its discriminator, their loss, the autoencoder task, latent caches,
diffusers AutoencoderKL folders, and latent runs that sample on their own."""
import json
import shutil

import numpy as np
import pytest
import torch

from noisecraft.autoencoder.loss import AutoencoderLoss, adaptive_weight, hinge_d_loss
from noisecraft.config import AutoencoderConfig, Config, apply_overrides
from noisecraft.errors import UserError
from noisecraft.models import build_autoencoder, build_discriminator
from noisecraft.models.autoencoder import DiagonalGaussian

COMMON = ["--image-size", 16, "--train.batch_size=8", "--train.log_every=2", "--train.val_every=2",
          "--train.ckpt_every=2", "--train.sample_every=100000", "--data.val_size=16", "--train.final_figures=false",
          "--train.precision=fp32", "--train.warmup_steps=1", "--no-progress"]
TINY_AE = ["--preset", "digits64-ae", "--autoencoder.base_channels=4", "--autoencoder.latent_channels=2",
           "--autoencoder.disc_channels=4", "--autoencoder.disc_layers=2", "--autoencoder.disc_start=1", *COMMON]
TINY_LATENT = ["--preset", "digits64-latent", "--model.unet.base_channels=8", "--model.unet.channel_mult=1,2",
               "--model.unet.attn_resolutions=2", "--model.head_channels=8", "--sample.steps=2", *COMMON]


def tiny_ae_config(**kw) -> AutoencoderConfig:
    return AutoencoderConfig(**{"base_channels": 4, "latent_channels": 3, "disc_channels": 4, "disc_layers": 2, **kw})


@pytest.mark.parametrize("f,mult", [(4, (1, 2, 2)), (8, (1, 2, 2, 2))])
def test_autoencoder_shapes_for_downsampling_factors_4_and_8(f, mult):
    ae = build_autoencoder(tiny_ae_config(downsample=f, channel_mult=mult), image_channels=3)
    x = torch.randn(2, 3, 32, 32)
    posterior = ae.encode(x)
    assert posterior.mean.shape == posterior.logvar.shape == (2, 3, 32 // f, 32 // f)
    x_rec, _ = ae(x)
    assert x_rec.shape == x.shape
    assert build_discriminator(tiny_ae_config(), 3)(x).shape[:2] == (2, 1)  # a logit per patch


def test_channel_mult_must_match_the_downsampling_factor():
    with pytest.raises(UserError, match="log2"):
        apply_overrides(Config(), {"autoencoder.downsample": "8"})  # (1, 2, 2) has 3 entries, f = 8 needs 4
    with pytest.raises(UserError, match="power of 2"):
        apply_overrides(Config(), {"autoencoder.downsample": "6"})
    with pytest.raises(UserError, match="--autoencoder PATH"):
        apply_overrides(Config(), {"autoencoder.latent": "true"})


def test_kl_of_the_diagonal_gaussian_matches_torch_distributions():
    mean, logvar = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    q = DiagonalGaussian(torch.cat([mean, logvar], 1))
    p = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    ref = torch.distributions.kl_divergence(p, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(q.kl(), ref)
    assert torch.allclose(DiagonalGaussian(torch.zeros(1, 4, 2, 2)).kl(), torch.zeros(1))  # q = N(0, I)


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    w = torch.randn(5, requires_grad=True)
    a, b = torch.randn(5), torch.randn(5)
    nll, g_adv = (w * a).sum(), (w * b).sum()  # gradients a and b
    weight = adaptive_weight(nll, g_adv, w, disc_weight=0.5)
    torch.testing.assert_close(weight, 0.5 * a.norm() / (b.norm() + 1e-4))
    assert not weight.requires_grad


def test_hinge_loss_closed_form():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # real: relu(1 - 2) = 0, relu(1 - 0.5) = 0.5 -> 0.25; fake: relu(1 - 2) = 0, relu(1 + 0) = 1 -> 0.5
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor(0.5 * (0.25 + 0.5)))


def test_generator_loss_sums_l1_over_pixels_and_adds_weighted_kl():
    cfg = tiny_ae_config(kl_weight=0.1)
    x, x_rec = torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5)
    q = DiagonalGaussian(torch.cat([torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)], 1))  # KL = 4 * 0.5 each
    g = AutoencoderLoss(cfg)(x, x_rec, q, None, torch.zeros(1))
    torch.testing.assert_close(g.total, torch.tensor(16 * 0.5 + 0.1 * 2.0))
    assert "g_adv" not in g.terms


def _task(disc_start: int):
    from noisecraft.train.autoencoder import AutoencoderTask
    from noisecraft.train.task import TaskContext

    cfg = Config(autoencoder=tiny_ae_config(disc_start=disc_start))
    cfg.model.in_channels, cfg.model.image_size, cfg.train.precision = 1, 16, "fp32"
    return AutoencoderTask(cfg, TaskContext(torch.device("cpu")))


def test_discriminator_trains_and_counts_only_from_its_start_step():
    task = _task(disc_start=2)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    before = [p.clone() for p in task.disc.parameters()]
    for step in range(2):
        losses = task.step((x, None), step).losses
        assert "disc" not in losses and "g_adv" not in losses
    assert all(torch.equal(a, b) for a, b in zip(before, task.disc.parameters(), strict=True))
    losses = task.step((x, None), 2).losses
    assert {"disc", "g_adv", "d_weight"} <= set(losses) and float(losses["d_weight"]) > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, task.disc.parameters(), strict=True))


def _codec(image_channels=1):
    from noisecraft.autoencoder.codec import LatentCodec

    torch.manual_seed(0)
    ae = build_autoencoder(tiny_ae_config(), image_channels)
    return LatentCodec(ae, "noisecraft", 1.7, 0.0, image_channels, 4, 3, "test", "0" * 64)


def test_latent_cache_equals_encoding_batches_on_the_fly(tmp_path):
    from noisecraft.data import DeviceBatcher, ImageData, LatentBatcher, latent_cache

    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (20, 1, 16, 16), dtype=torch.uint8, generator=g),
                     torch.arange(20) % 10, [str(i) for i in range(10)], "test")
    codec, cpu, path = _codec(), torch.device("cpu"), tmp_path / "latents.safetensors"
    cached = latent_cache(data, codec.encode, cpu, True, path, key="k")
    assert cached.latents.shape == (40, 3, 4, 4) and path.is_file()  # mirror images' latents follow
    pixels = DeviceBatcher(data, 8, cpu, hflip=True, seed=3)
    for latents in (cached, latent_cache(data, None, cpu, True, path, key="k")):  # encoded, then read back
        batcher = LatentBatcher(latents, 8, cpu, seed=3)
        for step in (0, 1, 5):  # steps 2+ cross an epoch boundary
            z, y = batcher.batch(step)
            x, y_ref = pixels.batch(step)
            assert pixels.flips(step).any() and not pixels.flips(step).all()
            torch.testing.assert_close(z, codec.encode(x), atol=1e-5, rtol=1e-5)
            assert torch.equal(y, y_ref)


def test_autoencoder_run_resumes_exactly(cli, tmp_path):
    from noisecraft.checkpoint import load_checkpoint

    whole, halves = tmp_path / "whole", tmp_path / "halves"
    assert cli("train-autoencoder", "--out", whole, "--steps", 4, *TINY_AE)[0] == 0
    assert cli("train-autoencoder", "--out", halves, "--steps", 2, *TINY_AE)[0] == 0
    assert cli("train-autoencoder", "--out", halves, "--steps", 4, "--resume", "--no-progress")[0] == 0
    a, b = load_checkpoint(whole, "last"), load_checkpoint(halves, "last")
    assert a.meta["modules"] == ["autoencoder", "autoencoder_ema", "discriminator"] and a.meta["task"] == "autoencoder"
    assert a.tensors.keys() == b.tensors.keys()
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k
    assert a.meta["latent_scale"] == b.meta["latent_scale"] > 0
    log = [json.loads(line) for line in (whole / "log.jsonl").read_text().splitlines()]
    assert "disc" in log[-2] and log[-2]["step"] == 4  # the discriminator switched on at step 1


def _sample(cli, run, out):
    code, _, err = cli("sample", "--checkpoint", run, "--class", 3, "--n", 2, "--steps", 2, "--out", out,
                       "--device", "cpu")
    assert code == 0, err
    from PIL import Image

    return Image.open(out / "00000.png")


def test_latent_run_samples_with_nothing_else_present(cli, tmp_path):
    ae, ldm = tmp_path / "ae", tmp_path / "ldm"
    assert cli("train-autoencoder", "--out", ae, "--steps", 2, *TINY_AE)[0] == 0
    code, _, err = cli("train", "--autoencoder", ae, "--out", ldm, "--steps", 2, *TINY_LATENT)
    assert code == 0, err
    meta = json.loads((ldm / "checkpoints" / "last.json").read_text())
    ae_meta = json.loads((ae / "checkpoints" / "last.json").read_text())
    assert meta["config"]["model"]["in_channels"] == 2 and meta["config"]["model"]["image_size"] == 4
    assert meta["autoencoder"]["scale"] == ae_meta["latent_scale"] and len(meta["autoencoder"]["sha256"]) == 64
    shutil.rmtree(ae)
    assert _sample(cli, ldm, tmp_path / "s").size == (16, 16)  # decoded to pixels by the run's own copy
    code, out, _ = cli("info", ldm)
    assert code == 0 and json.loads(out)["autoencoder"]["kind"] == "noisecraft"
    code, _, err = cli("explain", "--checkpoint", ldm, "--out", tmp_path / "x", "--figures", "latents,reverse",
                       "--n", 2, "--steps", 2, "--device", "cpu")
    assert code == 0, err
    index = json.loads((tmp_path / "x" / "explain.json").read_text())
    latents = next(f for f in index["figures"] if f["name"] == "latents")
    assert latents["latent_shape"] == [2, 4, 4] and latents["image_shape"] == [1, 16, 16]


def test_overwrite_with_another_autoencoder_trains_on_the_new_one(cli, tmp_path):
    """The defect it guards: --overwrite kept the old run's autoencoder/ copy, which the task prefers, so the new run
    trained on the old autoencoder while its config named the new one."""
    old, new, ldm = tmp_path / "ae_old", tmp_path / "ae_new", tmp_path / "ldm"
    assert cli("train-autoencoder", "--out", old, "--steps", 2, *TINY_AE)[0] == 0
    assert cli("train-autoencoder", "--out", new, "--steps", 3, *TINY_AE)[0] == 0
    assert cli("train", "--autoencoder", old, "--out", ldm, "--steps", 2, *TINY_LATENT)[0] == 0
    code, _, err = cli("train", "--autoencoder", new, "--out", ldm, "--steps", 2, "--overwrite", *TINY_LATENT)
    assert code == 0, err
    assert "--overwrite: removed" in err and "autoencoder/" in err and "checkpoints/" in err
    copy = (ldm / "autoencoder" / "autoencoder.safetensors").read_bytes()
    assert copy == (new / "checkpoints" / "last.safetensors").read_bytes()
    assert copy != (old / "checkpoints" / "last.safetensors").read_bytes()
    record = json.loads((ldm / "checkpoints" / "last.json").read_text())["autoencoder"]
    assert record["source"] == str(new)


def test_the_server_offers_a_latent_run_at_its_image_size_and_no_autoencoder_run(cli, tmp_path):
    from fastapi.testclient import TestClient

    from noisecraft.serve import ServeConfig, create_app

    runs = tmp_path / "runs"
    assert cli("train-autoencoder", "--out", runs / "ae", "--steps", 2, *TINY_AE)[0] == 0
    assert cli("train", "--autoencoder", runs / "ae", "--out", runs / "ldm", "--steps", 2, *TINY_LATENT)[0] == 0
    with TestClient(create_app(ServeConfig(runs=runs, device="cpu"))) as client:
        models = client.get("/api/models").json()["models"]
        assert [(m["name"], m["image_size"], m["channels"]) for m in models] == [("ldm", 16, 1)]
        assert {r["name"] for r in client.get("/api/runs").json()["runs"]} == {"ae", "ldm"}


def test_a_latent_run_without_a_copy_needs_its_unchanged_autoencoder(cli, tmp_path):
    ae, ldm = tmp_path / "ae", tmp_path / "ldm"
    assert cli("train-autoencoder", "--out", ae, "--steps", 2, *TINY_AE)[0] == 0
    args = ["--out", ldm, "--steps", 2, "--autoencoder.copy_into_run=false", *TINY_LATENT]
    assert cli("train", "--autoencoder", ae, *args)[0] == 0
    assert _sample(cli, ldm, tmp_path / "s").size == (16, 16)
    assert cli("train-autoencoder", "--out", ae, "--steps", 4, "--resume", "--no-progress")[0] == 0  # new weights
    code, _, err = cli("sample", "--checkpoint", ldm, "--n", 1, "--steps", 2, "--out", tmp_path / "t")
    assert code == 2 and "has changed" in err


def test_diffusers_autoencoder_kl_folder_round_trips_through_a_latent_run(cli, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 3,
                                  up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(4, 8, 8),
                                  layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=16,
                                  scaling_factor=0.37)
    vae.save_pretrained(tmp_path / "vae")
    from noisecraft.autoencoder.codec import load_codec

    codec = load_codec(tmp_path / "vae")
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (2, 4, 4, 4) and codec.downsample == 4 and codec.scale == 0.37
    with torch.no_grad():
        torch.testing.assert_close(z, vae.encode(x).latent_dist.mean * 0.37)
        torch.testing.assert_close(codec.decode(z), vae.decode(z / 0.37).sample)
    ldm = tmp_path / "ldm"
    code, _, err = cli("train", "--autoencoder", tmp_path / "vae", "--out", ldm, "--steps", 2, *TINY_LATENT,
                       "--model.unet.attn_resolutions=2")
    assert code == 0, err
    assert sorted(p.name for p in (ldm / "autoencoder").iterdir()) == ["config.json",
                                                                        "diffusion_pytorch_model.safetensors"]
    assert json.loads((ldm / "checkpoints" / "last.json").read_text())["autoencoder"]["scale"] == 0.37
    shutil.rmtree(tmp_path / "vae")
    assert _sample(cli, ldm, tmp_path / "s").size == (16, 16)


def test_latent_diffusion_refuses_an_autoencoder_for_other_images(cli, tmp_path):
    ae = tmp_path / "ae"
    assert cli("train-autoencoder", "--out", ae, "--steps", 2, *TINY_AE)[0] == 0
    code, _, err = cli("train", "--autoencoder", ae, "--out", tmp_path / "x", "--steps", 2, *TINY_LATENT,
                       "--image-size", 20)  # a multiple of f = 4, but not the size the autoencoder learnt
    assert code == 2 and "trained on 16x16 images" in err and "--image-size 16" in err, err
    assert not (tmp_path / "x" / "config.json").exists()  # nothing written half-way
    code, _, err = cli("train", "--autoencoder", tmp_path / "nowhere", "--out", tmp_path / "y", *TINY_LATENT)
    assert code == 2 and "not found" in err


def test_lpips_needs_a_real_weights_file(tmp_path):
    from noisecraft.autoencoder.perceptual import load_lpips

    with pytest.raises(UserError, match="not found"):
        load_lpips(tmp_path / "vgg16.pth", torch.device("cpu"))
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="VGG16"):
        load_lpips(tmp_path / "other.pth", torch.device("cpu"))


def test_evaluate_autoencoder_reports_reconstruction_quality(cli, tmp_path):
    ae = tmp_path / "ae"
    assert cli("train-autoencoder", "--out", ae, "--steps", 2, *TINY_AE)[0] == 0
    code, out, err = cli("evaluate-autoencoder", "--checkpoint", ae, "--no-classifier", "--device", "cpu")
    assert code == 0, err
    report = json.loads(out)
    assert report["n"] == 16 and (ae / "eval-autoencoder" / "reconstructions.png").is_file()
    # the figures are those of the same reconstructions, computed here independently (numpy, not torchmetrics)
    from noisecraft.autoencoder.codec import load_codec
    from noisecraft.checkpoint import load_checkpoint
    from noisecraft.data import load_dataset
    from noisecraft.evaluate.autoencoder import reconstruct

    x = load_dataset(load_checkpoint(ae, "last").config.data, "val").images[:16]
    rec = reconstruct(load_codec(ae, torch.device("cpu")), x)
    a, b = rec.double().numpy() / 255, x.double().numpy() / 255
    assert a.shape == b.shape and a.shape[0] == 16
    mse = ((a - b) ** 2).reshape(16, -1).mean(1)
    assert report["psnr_db"] == pytest.approx(float(np.mean(10 * np.log10(1 / mse))), abs=1e-3)
    assert report["ssim"] == pytest.approx(_ssim(a, b), abs=1e-4)


def _ssim(a, b, k=11, sigma=1.5, c1=0.01**2, c2=0.03**2) -> float:
    """SSIM (Wang et al. 2004) of images in [0, 1] (N, C, H, W): an 11x11 Gaussian window (sigma 1.5) centred on
    every pixel, the image mirrored at its borders (torchmetrics' convention), biased local moments, averaged over
    pixels, channels and images."""
    g = np.exp(-0.5 * ((np.arange(k) - (k - 1) / 2) / sigma) ** 2)
    w = np.outer(g, g) / np.outer(g, g).sum()
    r = k // 2

    def mean(z):  # local Gaussian mean around every pixel
        z = np.pad(z, ((0, 0), (0, 0), (r, r), (r, r)), mode="reflect")
        win = np.lib.stride_tricks.sliding_window_view(z, (k, k), axis=(-2, -1))
        return (win * w).sum(axis=(-2, -1))

    ma, mb = mean(a), mean(b)
    va, vb, cov = mean(a * a) - ma**2, mean(b * b) - mb**2, mean(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return float(s.mean())


def test_sharpness_measures_fall_with_blur():
    from noisecraft.evaluate.autoencoder import high_frequency_energy, laplacian_variance

    g = torch.Generator().manual_seed(0)
    sharp = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8, generator=g)
    blur = torch.nn.functional.avg_pool2d(sharp.float(), 3, 1, 1).round().to(torch.uint8)
    assert laplacian_variance(blur) < laplacian_variance(sharp)
    assert high_frequency_energy(blur) < high_frequency_energy(sharp)


def test_the_latent_scale_costs_the_same_whatever_the_data_sets_size():
    from noisecraft.data import ImageData
    from noisecraft.train.autoencoder import SCALE_SAMPLE, latent_scale

    class Counting(torch.nn.Module):  # an "encoder" whose latents are its input, counting what it encodes
        seen = 0

        def encode(self, x):
            Counting.seen += len(x)
            return type("Posterior", (), {"mode": lambda self: x})()

    images = (torch.arange(4000) % 256).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    class Streamed:  # a folder too large for memory: decoded one item at a time
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return images[i], 0

    for data in (ImageData(images[:1000], None, [], "x"), ImageData(images, None, [], "x"), Streamed()):
        Counting.seen = 0
        scale = latent_scale(Counting(), data, torch.device("cpu"))
        assert Counting.seen == SCALE_SAMPLE and 1.5 < scale < 2.0  # 1 / std of evenly spread values in [-1, 1]
