"""The codec of a pipeline: what turns the space the sampler draws in into images. `IdentityCodec` for pixel
runs; `LatentCodec`, the frozen autoencoder of a latent diffusion run: images <-> scaled latents.

Two sources: a noisecraft autoencoder run (its EMA weights, and the latent scale measured on its training data,
see `train.autoencoder`) or a diffusers `AutoencoderKL` folder (config.json + weights, e.g. Stable Diffusion's VAE,
with its own `scaling_factor` and `shift_factor`). A diffusion run records which one it used (`record()`: kind,
source path, sha256 of its files, scale) and by default keeps a copy in `<run>/autoencoder/`, so the run alone
samples.

    z = (mean of q(z | x) - shift) * scale          x = decode(z / scale + shift)
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from noisecraft.data import ImageData, encode_images, latent_cache
from noisecraft.errors import UserError
from noisecraft.rundir import RunDir, content_hash, resolve_checkpoint

NOISECRAFT_FILE = "autoencoder.safetensors"  # a noisecraft autoencoder's copy: its EMA weights and config
DIFFUSERS_FILES = ("config.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def is_diffusers_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / f).is_file() for f in DIFFUSERS_FILES[1:])


def _source_files(path: Path) -> list[Path]:
    """The files that define an autoencoder: a diffusers folder's config and weights, or a noisecraft checkpoint."""
    if is_diffusers_folder(path):
        return [path / f for f in DIFFUSERS_FILES if (path / f).is_file()]
    return [resolve_checkpoint(path, "last")]


class Codec(nn.Module):
    """What every codec does the same way."""

    def held_out(self, images: torch.Tensor, device) -> torch.Tensor:
        """uint8 images (N, C, H, W) -> what the network sees (pixels in [-1, 1], or latents), encoded in batches."""
        return encode_images(images, self.encode, device)


class IdentityCodec(Codec):
    """Pixel space: the sampler draws the images themselves, so x0 estimates may be clipped to [-1, 1]."""

    clip_x0 = True
    shows_x_t = True  # a noisy x_t is an image, which the forward and reverse figures show
    feather = 0  # an inpainting's known pixels are pasted back exactly
    autoencoder = None  # no autoencoder to show (explain's latents figure)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [-1, 1], as it is
        return x

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def image_shape(self, sample_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return tuple(sample_shape)

    def record(self) -> None:  # nothing for a checkpoint to keep
        return None

    def training_view(self, data, device, hflip: bool, path: Path | None):
        """What training draws batches from: the pixels as loaded (streamed folders and augmentation included)."""
        return data

    def keep_mask(self, mask: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """The known pixels of an inpainting, bool (n, 1, H, W), from its mask (True: regenerate)."""
        return ~mask


class LatentCodec(Codec):
    """A frozen autoencoder (eval mode, no gradients) with its latent scale and shift. Clipping x0 to [-1, 1] is a
    rule of pixel space, so a latent pipeline never clips."""

    clip_x0 = False
    shows_x_t = False  # its noise is in latent space: a noisy latent is no picture of the image being noised

    def __init__(self, ae: nn.Module, kind: str, scale: float, shift: float, image_channels: int, downsample: int,
                 latent_channels: int, source: str, sha256: str, image_size: int | None = None):
        super().__init__()
        self.image_size = image_size  # the size it was trained at (a noisecraft run); None: any (a diffusers VAE)
        self.ae = ae.eval().requires_grad_(False)
        self.kind, self.scale, self.shift = kind, float(scale), float(shift)
        self.image_channels, self.downsample, self.latent_channels = image_channels, downsample, latent_channels
        self.source, self.sha256 = source, sha256

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [-1, 1] -> (B, z, H/f, W/f)
        if self.kind == "diffusers":
            mean = self.ae.encode(x).latent_dist.mean
        else:
            mean = self.ae.encode(x).mode()
        return (mean.float() - self.shift) * self.scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:  # (B, z, h, w) -> (B, C, h f, w f), about [-1, 1]
        z = z / self.scale + self.shift
        out = self.ae.decode(z).sample if self.kind == "diffusers" else self.ae.decode(z)
        return out.float()

    def image_shape(self, sample_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(C, H, W) of the images that latents of `sample_shape` (z, h, w) decode to."""
        _, h, w = sample_shape
        return (self.image_channels, h * self.downsample, w * self.downsample)

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        if image_size % self.downsample:
            raise UserError(f"the autoencoder's downsampling factor {self.downsample} must divide the image size "
                            f"{image_size}: pick --image-size a multiple of {self.downsample}")
        return (self.latent_channels, image_size // self.downsample, image_size // self.downsample)

    def record(self) -> dict:
        """What a diffusion run keeps in its checkpoints' metadata about this autoencoder."""
        return {"kind": self.kind, "source": self.source, "sha256": self.sha256, "scale": self.scale,
                "shift": self.shift, "downsample": self.downsample, "latent_channels": self.latent_channels,
                "image_channels": self.image_channels}

    def training_view(self, data, device, hflip: bool, path: Path | None):
        """The training set's latents, encoded once (and its mirror images with flips on) and cached at `path`."""
        if not isinstance(data, ImageData):
            raise UserError("latent diffusion encodes the training set in memory: this image folder is larger than "
                            "data.max_memory_mb; raise it")
        key = f"{self.sha256}:{self.scale!r}:{len(data)}:{data.image_size}:{hflip}"
        return latent_cache(data, self.encode, device, hflip, path, key)

    @property
    def feather(self) -> int:
        """Pixels over which an inpainting's decoded border blends into the known image (a latent cell's size)."""
        return self.downsample

    @property
    def autoencoder(self) -> "LatentCodec":
        return self

    def keep_mask(self, mask: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """The known cells of the latent grid (n, 1, h, w): a cell is regenerated if any pixel it covers is, so no
        masked pixel is decoded from a kept latent."""
        return ~(F.adaptive_max_pool2d(mask.float(), hw) > 0)

    def copy_into(self, run_root: Path) -> Path:
        """Keep this autoencoder in `run_root/autoencoder/` (its EMA weights and config; a diffusers folder's
        files as they are), so the run samples without the original."""
        dest = RunDir(run_root).autoencoder_copy
        dest.mkdir(parents=True, exist_ok=True)
        src = Path(self.source)
        if self.kind == "diffusers":
            for f in _source_files(src):
                shutil.copyfile(f, dest / f.name)
        else:
            shutil.copyfile(_source_files(src)[0], dest / NOISECRAFT_FILE)
        return dest


def _load_noisecraft(path: Path, device) -> LatentCodec:
    from noisecraft.checkpoint import load_checkpoint
    from noisecraft.models import build_autoencoder

    ckpt = load_checkpoint(path, "last")  # the end of training (`best` is by L1 alone, blind to the GAN term)
    if ckpt.meta.get("task") != "autoencoder":
        raise UserError(f"{path} is not an autoencoder run (its task is '{ckpt.meta.get('task', 'diffusion')}'): "
                        f"train one with `noisecraft train-autoencoder`, or give a diffusers AutoencoderKL folder")
    if "latent_scale" not in ckpt.meta:
        raise UserError(f"{ckpt.path} holds no latent scale (written before its training data was seen)")
    a = ckpt.config.autoencoder
    ae = ckpt.load_module("autoencoder_ema", build_autoencoder(a, ckpt.config.model.in_channels))
    return LatentCodec(ae.to(device), "noisecraft", ckpt.meta["latent_scale"], 0.0, ckpt.config.model.in_channels,
                       a.downsample, a.latent_channels, str(path), content_hash([ckpt.path]),
                       ckpt.config.model.image_size)


def _load_diffusers(path: Path, device) -> LatentCodec:
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise UserError("a diffusers AutoencoderKL needs the diffusers package: pip install diffusers") from None
    ae = AutoencoderKL.from_pretrained(str(path))
    c = ae.config
    return LatentCodec(ae.to(device), "diffusers", c.scaling_factor, c.get("shift_factor") or 0.0, c.in_channels,
                       2 ** (len(c.block_out_channels) - 1), c.latent_channels, str(path),
                       content_hash(_source_files(path)))


def load_codec(path: str | Path, device: torch.device | str = "cpu") -> LatentCodec:
    """The autoencoder at `path`: a diffusers AutoencoderKL folder, a noisecraft autoencoder run or checkpoint,
    or a diffusion run's copy (`<run>/autoencoder`)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"autoencoder not found: {p}")
    if is_diffusers_folder(p):
        return _load_diffusers(p, device)
    if (p / NOISECRAFT_FILE).is_file():
        p = p / NOISECRAFT_FILE
    return _load_noisecraft(p, device)


def load_run_codec(run_root: Path, record: dict, source: str | None, device) -> LatentCodec:
    """A diffusion run's autoencoder: its own copy when it has one, else the recorded source, which must still
    hold the same files (sha256)."""
    copy = RunDir(run_root).autoencoder_copy
    if copy.is_dir():
        codec = load_codec(copy, device)
    elif source and Path(source).exists():
        codec = load_codec(source, device)
        if record.get("sha256") and codec.sha256 != record["sha256"]:
            raise UserError(f"the autoencoder at {source} has changed since {run_root} was trained on it (sha256 "
                            f"{codec.sha256[:12]} != {record['sha256'][:12]})")
    else:
        raise UserError(f"{run_root} was trained in the latent space of {source}, which is gone, and holds no copy "
                        f"of it ({copy})")
    codec.source, codec.sha256 = record.get("source", codec.source), record.get("sha256", codec.sha256)
    if record.get("scale") is not None:
        codec.scale = float(record["scale"])  # the scale the U-Net was trained with
    return codec


def run_codec(cfg, root: Path | None, record: dict, device) -> Codec:
    """The codec a run's config asks for at sampling: the identity in pixel space, else its autoencoder
    (`load_run_codec`, from `record`, the checkpoint's metadata about it)."""
    if not cfg.autoencoder.latent:
        return IdentityCodec()
    return load_run_codec(root, record, cfg.autoencoder.path, device)


def train_codec(cfg, root: Path | None, device, is_main: bool = True):
    """The codec a training run works through: the identity in pixel space; for latent diffusion the frozen
    autoencoder, the run's own copy when it has one (a resumed run), else autoencoder.path, copied into the run
    (main process) unless autoencoder.copy_into_run is off."""
    a = cfg.autoencoder
    if not a.latent:
        return IdentityCodec()
    copy = RunDir(root).autoencoder_copy if root is not None else None
    if copy is not None and copy.is_dir():
        codec = load_codec(copy, device)
        codec.source = a.path
        return codec
    codec = load_codec(a.path, device)
    if copy is not None and a.copy_into_run and is_main:
        codec.copy_into(root)
    return codec


def configure_codec(cfg, data) -> None:
    """A latent run's network sees the autoencoder's latents: their channels and size; the decoded images'
    channels are recorded (what the run draws). Pixel runs: nothing to fill in."""
    if not cfg.autoencoder.latent:
        return
    codec = load_codec(cfg.autoencoder.path)
    if codec.image_channels != data.channels:
        raise UserError(f"the autoencoder at {cfg.autoencoder.path} takes {codec.image_channels}-channel images, "
                        f"the {cfg.data.dataset} data has {data.channels}")
    if codec.image_size and codec.image_size != data.image_size:
        raise UserError(f"the autoencoder at {cfg.autoencoder.path} was trained on {codec.image_size}x"
                        f"{codec.image_size} images, the {cfg.data.dataset} data here are {data.image_size}x"
                        f"{data.image_size}: pass --image-size {codec.image_size} or train one for this size")
    cfg.model.in_channels, cfg.model.image_size, _ = codec.latent_shape(data.image_size)
    cfg.autoencoder.image_channels = codec.image_channels


def derived_codec_path(cfg, root: Path) -> str | None:
    """The autoencoder a run derived from the run at `root` (a distilled student) reads: that run's own copy, whose
    source may be gone; None for pixel runs or a run without a copy."""
    copy = RunDir(root).autoencoder_copy
    return str(copy) if cfg.autoencoder.latent and copy.is_dir() else None
