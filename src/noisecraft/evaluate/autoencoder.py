"""How well an autoencoder reconstructs held-out images: PSNR and SSIM (torchmetrics), for colour images the
CIEDE2000 colour difference in CIELAB (scikit-image), overall and per hue, the offline judge's accuracy on the
reconstructions and their Fréchet distance in its feature space (FD-clf), and sharpness (variance of the Laplacian;
share of spectral energy above half the Nyquist frequency), each next to the originals' own."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from noisecraft.config import to_json
from noisecraft.errors import UserError
from noisecraft.rundir import REPORT_JSON, run_root

LATENT_EXTRA = 'pip install -e ".[latent]"'
LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian_variance(images_uint8: torch.Tensor) -> float:
    """Mean over images of the variance of their Laplacian (pixels in [0, 1]): blur lowers it."""
    x = images_uint8.float() / 255.0  # (N, C, H, W)
    k = LAPLACIAN.to(x)[None, None].repeat(x.shape[1], 1, 1, 1)
    lap = F.conv2d(x, k, groups=x.shape[1])
    return float(lap.flatten(1).var(1).mean())


def high_frequency_energy(images_uint8: torch.Tensor) -> float:
    """Share of the images' spectral energy (mean removed) above half the Nyquist frequency, in either axis."""
    x = images_uint8.float() / 255.0
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2)  # (N, C, H, W)
    fy = torch.fft.fftfreq(x.shape[-2]).abs()[:, None]
    fx = torch.fft.fftfreq(x.shape[-1]).abs()[None, :]
    high = (torch.maximum(fy, fx) > 0.25).to(power)  # 0.5 is Nyquist
    return float((power * high).sum() / power.sum().clamp_min(1e-12))


def reconstruction_quality(x: torch.Tensor, rec: torch.Tensor) -> dict:
    """PSNR (dB, mean over images) and SSIM of uint8 reconstructions `rec` of uint8 images `x` (N, C, H, W)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    a, b = rec.float() / 255.0, x.float() / 255.0
    psnr = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(a, b, data_range=1.0)
    return {"psnr_db": float(psnr.mean()), "ssim": float(ssim)}


def _skimage_color():
    """skimage.color, or one UserError naming the extra that brings it."""
    try:
        from skimage import color
    except ImportError as e:
        raise UserError(f"the colour error (ΔE2000) needs scikit-image ({e}): {LATENT_EXTRA}") from None
    return color


def delta_e2000(x: torch.Tensor, rec: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Per-pixel CIEDE2000 difference (N, H, W) between uint8 sRGB images `x` (N, 3, H, W) and `rec`, in CIELAB
    (D65); in chunks of images, as the float64 Lab arrays of a whole split would be large."""
    color = _skimage_color()
    out = []
    for a, b in zip(x.split(chunk), rec.split(chunk)):
        lab = [color.rgb2lab(t.permute(0, 2, 3, 1).numpy() / 255.0) for t in (a, b)]
        out.append(torch.from_numpy(color.deltaE_ciede2000(*lab)).float())
    return torch.cat(out)


def _mean_p95(values: torch.Tensor) -> dict:
    """Mean and 95th percentile (linear interpolation between order statistics, numpy's default)."""
    v = values.flatten().double().numpy()
    return {"mean": float(v.mean()), "p95": float(np.percentile(v, 95))}


def colour_error(x: torch.Tensor, rec: torch.Tensor) -> dict:
    """ΔE2000 of uint8 RGB reconstructions `rec` of `x` (N, 3, H, W): mean and 95th percentile over all pixels,
    and the same per colour word of each input image (`captions.dominant_colour`, in COLOURS' order) with its
    image count: a mean over all pixels, much of them background, can hide one hue reconstructed badly."""
    from noisecraft.captions import COLOURS, dominant_colour

    de = delta_e2000(x, rec)
    words = dominant_colour(x)
    by_hue = {COLOURS[w]: {"images": int((words == w).sum()), **_mean_p95(de[words == w])}
              for w in sorted(set(words.tolist()))}
    return {**_mean_p95(de), "by_hue": by_hue}


def judge_agreement(x: torch.Tensor, rec: torch.Tensor, data_cfg, device) -> float:
    """Share of reconstructions the judge puts in the same class as their original, in its own (finest) labels:
    what the picture is, as far as the judge can tell, kept through the autoencoder."""
    from noisecraft.evaluate.classifier import get_classifier

    clf = get_classifier(data_cfg, device=device)
    same = clf.predict(x, own_classes=True)[0].argmax(1) == clf.predict(rec, own_classes=True)[0].argmax(1)
    return same.float().mean().item()


@dataclass
class AutoencoderEvalOptions:
    n: int | None = None  # held-out images to reconstruct; None: all of the val split
    device: str = "auto"
    classifier: bool = True  # the offline judge's accuracy and FD-clf on the reconstructions
    batch_size: int = 128


@torch.no_grad()
def reconstruct(codec, images_uint8: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """uint8 reconstructions decode(mean of q(z | x)) of uint8 images, in batches."""
    from noisecraft.data import to_model_range, to_uint8

    device = next(codec.ae.parameters()).device
    return torch.cat([to_uint8(codec.decode(codec.encode(to_model_range(chunk.to(device))))).cpu()
                      for chunk in images_uint8.split(batch_size)])


def evaluate_autoencoder(run: str | Path, out: str | Path | None = None,
                         opts: AutoencoderEvalOptions | None = None) -> dict:
    """Reconstruct the held-out split of the autoencoder run's data; write report.json and reconstructions.png
    (originals over reconstructions) to `out` (default: <run>/eval-autoencoder). Colour data also reports
    `delta_e2000` (`colour_error`); grey data has no colour to get wrong and does not."""
    from noisecraft.autoencoder.codec import load_codec
    from noisecraft.checkpoint import load_checkpoint
    from noisecraft.data import load_dataset
    from noisecraft.device import pick_device
    from noisecraft.evaluate.report import classifier_metrics
    from noisecraft.viz import save_grid

    opts = opts or AutoencoderEvalOptions()
    device = pick_device(opts.device)
    ckpt = load_checkpoint(run, "last")  # the one latent diffusion uses (see autoencoder.codec)
    codec = load_codec(run, device)
    data_cfg = ckpt.config.data
    val = load_dataset(data_cfg, "val")
    x = val.images[:opts.n] if opts.n else val.images
    labels = val.labels[:len(x)] if val.labels is not None else None
    if len(x) < 2:
        raise UserError(f"need at least 2 held-out images, got {len(x)}")
    rec = reconstruct(codec, x, opts.batch_size)
    report = {"checkpoint": str(ckpt.path), "step": ckpt.step, "dataset": data_cfg.dataset,
              "image_size": x.shape[-1], "n": len(x), "latent_scale": ckpt.meta.get("latent_scale"),
              "lpips": bool(ckpt.meta.get("lpips")), **reconstruction_quality(x, rec),
              "sharpness": {"laplacian_variance": laplacian_variance(rec), "high_freq_energy": high_frequency_energy(rec),
                            "originals_laplacian_variance": laplacian_variance(x),
                            "originals_high_freq_energy": high_frequency_energy(x)}}
    if x.shape[1] == 3:
        report["delta_e2000"] = colour_error(x, rec)
    if opts.classifier:
        m = classifier_metrics(rec, labels, data_cfg, device)
        report["judge"] = {"accuracy": m["generated"].get("class_accuracy"), "fd_clf": m["generated"]["fd"],
                           "originals_accuracy": m["real_heldout"].get("class_accuracy"),
                           "originals_fd_clf": m["real_heldout"]["fd"], "classifier": m["classifier"],
                           "agreement": judge_agreement(x, rec, data_cfg, device)}
    out = Path(out) if out is not None else run_root(ckpt.path) / "eval-autoencoder"
    out.mkdir(parents=True, exist_ok=True)
    k = min(32, len(x) // 8 * 8) or len(x)
    nrow = min(8, k)
    pairs = torch.stack([x[:k].view(-1, nrow, *x.shape[1:]), rec[:k].view(-1, nrow, *x.shape[1:])], 1)
    save_grid(pairs.flatten(0, 2), out / "reconstructions.png", nrow=nrow)
    (out / REPORT_JSON).write_text(to_json(report) + "\n")
    report["out"] = str(out)
    return report
