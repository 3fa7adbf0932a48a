"""Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019, "Improved Precision and Recall Metric
for Assessing Generative Models").

The real manifold is approximated by the union of balls around each real feature vector, of radius the
distance to its k-th nearest real neighbour (k = 3 in the paper). Precision is the share of generated samples
inside the real manifold (are samples realistic?); recall is the share of real samples inside the manifold
built the same way from the generated ones (is the data's variety covered?).
"""
from __future__ import annotations

import torch


def _as_float(x) -> torch.Tensor:
    x = torch.as_tensor(x).detach().cpu().float()
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(x.shape)}")
    return x


def kth_neighbour_radii(features: torch.Tensor, k: int = 3, chunk: int = 1024) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point of the same set, (N,)."""
    if len(features) <= k:
        raise ValueError(f"need more than k={k} samples for k-NN radii, got {len(features)}")
    out = []
    for start in range(0, len(features), chunk):
        d = torch.cdist(features[start:start + chunk], features)  # (c, N)
        # The point itself is at distance 0 and is the smallest: the (k+1)-th smallest is the k-th neighbour.
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out)


def manifold_coverage(manifold: torch.Tensor, radii: torch.Tensor, queries: torch.Tensor,
                      chunk: int = 1024) -> float:
    """Share of `queries` that fall inside at least one ball (manifold[i], radii[i])."""
    inside = []
    for start in range(0, len(queries), chunk):
        d = torch.cdist(queries[start:start + chunk], manifold)  # (c, M)
        inside.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(inside).float().mean().item()


def precision_recall(real_features, fake_features, k: int = 3) -> dict[str, float]:
    """Improved precision and recall of `fake_features` against `real_features`, each (N, D)."""
    real, fake = _as_float(real_features), _as_float(fake_features)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature widths differ: {real.shape[1]} vs {fake.shape[1]}")
    precision = manifold_coverage(real, kth_neighbour_radii(real, k), fake)
    recall = manifold_coverage(fake, kth_neighbour_radii(fake, k), real)
    return {"precision": precision, "recall": recall, "k": k}
