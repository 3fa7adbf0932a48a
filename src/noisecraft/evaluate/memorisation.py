"""How much of a model's output copies its training set, in the judge classifier's feature space.

For each image, the distance to its nearest training image (in the judge's 128-d features). Real held-out images,
which the model never saw, set the scale: a sample counts as a near-copy when its nearest training image is closer
than that of all but `quantile` of the held-out images (5%: by construction 5% of the held-out images fall under the
cut). A model that draws new images scores about the held-out share; one that memorised its (small) training set
scores well above it. The ratio of the median distances says the same without a cut.
"""
from __future__ import annotations

import torch


def nearest_distance(features: torch.Tensor, reference: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Euclidean distance of each row of `features` (N, D) to its nearest row of `reference` (M, D): (N,)."""
    ref = reference.float()
    out = [torch.cdist(f.float(), ref).min(1).values for f in features.split(chunk)]
    return torch.cat(out) if out else torch.empty(0)


def memorisation(generated: torch.Tensor, train: torch.Tensor, heldout: torch.Tensor, quantile: float = 0.05) -> dict:
    """{"near_copy_share", "heldout_share", "quantile", "threshold", "median_ratio", "n", "heldout_n"} of generated
    features against the training features, with the held-out features' distances as the scale (module docstring)."""
    d_gen, d_val = nearest_distance(generated, train), nearest_distance(heldout, train)
    threshold = torch.quantile(d_val, quantile).item()
    return {"near_copy_share": (d_gen < threshold).float().mean().item(),
            "heldout_share": (d_val < threshold).float().mean().item(), "quantile": quantile, "threshold": threshold,
            "median_ratio": (d_gen.median() / d_val.median().clamp(min=1e-12)).item(),
            "n": len(d_gen), "heldout_n": len(d_val)}
