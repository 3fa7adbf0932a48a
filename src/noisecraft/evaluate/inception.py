"""Inception-v3 feature pipeline for FID / KID / IS, through torch-fidelity (the `eval` extra).

torch-fidelity's `FeatureExtractorInceptionV3` is the TF-ported network that FID papers use (torchmetrics
wraps the same one): it takes uint8 RGB images of any size, resizes them to 299x299 with TF1's bilinear
interpolation and returns the 2048-d pool features and the 1008-way `logits_unbiased` used for IS.
Grayscale images are repeated to 3 channels, as is usual for MNIST FIDs.

Weights are never downloaded here. They come from an explicit path (`--inception-weights`) or from the torch
hub cache where torch-fidelity / torchmetrics put them on a machine that is online. Without either, the
caller gets `InceptionUnavailable` with a one-line hint, and the offline metrics run on.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from noisecraft.errors import UserError

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_FILE
FEATURES = ("2048", "logits_unbiased")


class InceptionUnavailable(UserError):
    """The Inception weights (or torch-fidelity) are not installed: FID/KID/IS cannot be computed."""


def cached_weights_path() -> Path:
    """Where torch-fidelity and torchmetrics keep the weights once downloaded (torch hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def find_weights(path: str | Path | None = None) -> Path:
    """The weights file to use: `path` if given (must exist), else the torch hub cache copy."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise UserError(f"Inception weights not found: {p}")
        return p
    env = os.environ.get("NOISECRAFT_INCEPTION_WEIGHTS")
    if env and Path(env).is_file():
        return Path(env)
    p = cached_weights_path()
    if p.is_file():
        return p
    raise InceptionUnavailable(
        f"FID/KID/IS skipped: no Inception-v3 weights; download {WEIGHTS_URL} to {p} "
        f"(or pass --inception-weights PATH)")


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file of plain tensors (weights_only: no code from pickles)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read Inception weights {path}: {e}") from None


def build_inception(weights: str | Path | None | bool = None, device: torch.device | str = "cpu"):
    """torch-fidelity's InceptionV3 feature extractor returning (pool 2048, logits_unbiased).

    `weights`: a path, None (look in the cache; raises InceptionUnavailable if absent), or False for an
    uninitialised network (tests of shapes and batching only: its numbers mean nothing)."""
    try:
        import torch_fidelity.feature_extractor_inceptionv3 as tfi
    except ImportError:
        raise InceptionUnavailable("FID/KID/IS skipped: torch-fidelity is not installed; "
                                   "pip install 'noisecraft[eval]'") from None
    from unittest import mock

    if weights is False:
        state = None
    else:
        state = _load_state_dict(find_weights(weights))

    class _Inception(tfi.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            if state_dict is None:  # uninitialised on purpose
                return None
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # torch-fidelity's constructor loads its weights itself (downloading when given no path, or torch.load
    # without weights_only when given one); hand it the state dict loaded above instead, so nothing is fetched.
    with mock.patch.object(tfi, "load_state_dict_from_url", lambda *a, **k: state):
        net = _Inception("inception-v3-compat", list(FEATURES))
    return net.to(device).eval()


def to_rgb_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1|3, H, W) -> uint8 (N, 3, H, W)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise UserError(f"Inception takes uint8 (N, 1|3, H, W) images, got {images.dtype} {tuple(images.shape)}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


@torch.no_grad()
def inception_features(net, images: torch.Tensor, batch_size: int = 64, device: torch.device | str = "cpu",
                       progress: bool = False) -> dict[str, torch.Tensor]:
    """{'pool': (N, 2048), 'logits': (N, 1008)} float64 on the CPU, computed in batches.

    The network works image by image (BatchNorm in eval mode), so the result does not depend on batch_size."""
    pools, logits = [], []
    bar = tqdm(total=len(images), desc="inception features", unit="img", disable=not progress, leave=False)
    for chunk in images.split(batch_size):
        pool, logit = net(to_rgb_uint8(chunk).to(device))
        pools.append(pool.double().cpu())
        logits.append(logit.double().cpu())
        bar.update(len(chunk))
    bar.close()
    return {"pool": torch.cat(pools), "logits": torch.cat(logits)}
