"""Metric arithmetic on feature vectors: Fréchet distance (FID), kernel distance (KID), Inception Score.

Conventions follow torch-fidelity (which torchmetrics also uses), so numbers compare with papers:

* FID (Heusel et al. 2017): Gaussian statistics in float64, the unbiased covariance (divide by N - 1),
  d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}).
* KID (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,
  averaged over 100 random subsets of 1,000 samples (seed 2020).
* IS (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) over 10 splits of the shuffled samples (seed 2020),
  from Inception's `logits_unbiased`.

Pure numpy/torch: no weights needed, so this is what the tests check against scipy and closed forms.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

RNG_SEED = 2020  # torch-fidelity's default seed for KID subsets and IS shuffling


@dataclass
class GaussianStats:
    """Mean and covariance of a feature set (float64), plus how many samples they came from."""

    mu: np.ndarray  # (D,)
    sigma: np.ndarray  # (D, D)
    n: int

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"mu": torch.from_numpy(self.mu), "sigma": torch.from_numpy(self.sigma),
                "n": torch.tensor([self.n], dtype=torch.int64)}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "GaussianStats":
        return cls(t["mu"].double().numpy(), t["sigma"].double().numpy(), int(t["n"][0]))


def _numpy64(features) -> np.ndarray:
    if torch.is_tensor(features):
        features = features.detach().cpu().double().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    return features


def gaussian_stats(features) -> GaussianStats:
    """Fit a Gaussian to (N, D) features: mean and unbiased covariance (np.cov, rowvar=False), float64."""
    f = _numpy64(features)
    if len(f) < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {len(f)}")
    return GaussianStats(f.mean(axis=0), np.cov(f, rowvar=False), len(f))


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition (negative eigenvalues,
    which appear only through round-off, are clipped to zero)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    tr((S1 S2)^{1/2}) is computed as tr((S1^{1/2} S2 S1^{1/2})^{1/2}): the two matrices are similar, and the
    second is symmetric PSD, so a symmetric eigendecomposition gives it stably, with no complex round-off
    (which is what trips scipy's `sqrtm` on the near-singular covariances of few samples).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    s1_half = _psd_sqrt(sigma1)
    middle = s1_half @ sigma2 @ s1_half
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def frechet_distance_stats(a: GaussianStats, b: GaussianStats) -> float:
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def frechet_distance_features(features, reference: GaussianStats) -> float:
    """`frechet_distance_stats(gaussian_stats(features), reference)`; with fewer samples than dimensions (500
    samples of Inception's 2048 features) computed in the samples' space, exactly and without a D x D root.

    With X the (N, D) centred features over sqrt(N - 1), S1 = X^T X, and the non-zero eigenvalues of S1 S2 are
    those of the symmetric PSD N x N matrix X S2 X^T: tr((S1 S2)^{1/2}) is the sum of their square roots."""
    f = _numpy64(features)
    n, d = f.shape
    if n > d:
        return frechet_distance_stats(gaussian_stats(f), reference)
    if n < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {n}")
    if reference.mu.shape != (d,):
        raise ValueError(f"mismatched statistics: features of width {d} vs mu {reference.mu.shape}")
    mu = f.mean(axis=0)
    x = (f - mu) / np.sqrt(n - 1)  # (N, D)
    middle = x @ reference.sigma @ x.T  # (N, N)
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu - reference.mu
    return float(diff @ diff + (x * x).sum() + np.trace(reference.sigma) - 2 * tr_covmean)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
    """k(x, y) = (gamma x.y + coef0)^degree, gamma = 1/D by default (the KID kernel)."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * gamma + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """Unbiased estimate of MMD^2 from kernel matrices of two equal-size samples (diagonals of K_XX and K_YY
    dropped; all of K_XY kept, as in torch-fidelity and the KID paper's code)."""
    m = k_xx.shape[0]
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kernel_distance(features1, features2, subsets: int = 100, subset_size: int = 1000,
                    seed: int = RNG_SEED) -> dict[str, float]:
    """KID: mean and std of the unbiased polynomial-kernel MMD^2 over random subsets (without replacement).

    When a set has fewer than `subset_size` samples the subset size shrinks to fit (reported back), instead of
    failing as torch-fidelity does."""
    f1, f2 = _numpy64(features1), _numpy64(features2)
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature widths differ: {f1.shape[1]} vs {f2.shape[1]}")
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    for i in range(subsets):
        a = f1[rng.choice(len(f1), m, replace=False)]
        b = f2[rng.choice(len(f2), m, replace=False)]
        mmds[i] = mmd2_unbiased(polynomial_kernel(a, a), polynomial_kernel(a, b), polynomial_kernel(b, b))
    return {"mean": float(mmds.mean()), "std": float(mmds.std()), "subset_size": m, "subsets": subsets}


def inception_score(logits, splits: int = 10, shuffle: bool = True, seed: int = RNG_SEED) -> dict[str, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))), p(y) the mean prediction within each split; mean and std over splits."""
    logits = torch.as_tensor(logits).detach().cpu().double()
    n = len(logits)
    if n < splits:
        raise ValueError(f"Inception Score needs at least {splits} samples (one per split), got {n}")
    if shuffle:
        logits = logits[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    p, log_p = logits.softmax(1), logits.log_softmax(1)
    scores = []
    for i in range(splits):
        sl = slice(i * n // splits, (i + 1) * n // splits)
        q = p[sl].mean(0, keepdim=True)
        scores.append((p[sl] * (log_p[sl] - q.log())).sum(1).mean().exp().item())
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "splits": splits}
