"""Conditioning: class labels with a null token for classifier-free guidance; prompts through a frozen text
encoder in `conditioning.text`.

A conditioning is a dict of batched tensors passed to the network as keyword arguments (`{"class_labels": (B,)}`,
or for text `{"context": (B, L, D), "context_mask": (B, L), "context_pooled": (B, D)}`), so the samplers, guidance
and trainer can batch, concatenate and drop it without knowing what it holds.
"""
from __future__ import annotations

import torch

from noisecraft.errors import UserError


def class_cond(labels: torch.Tensor | None) -> dict | None:
    return None if labels is None else {"class_labels": labels}


def null_cond(num_classes: int, device) -> dict:
    """The 'no condition' token: class index `num_classes` (the extra embedding row)."""
    return {"class_labels": torch.tensor([num_classes], device=device)}


def drop_labels(labels: torch.Tensor, p: float, num_classes: int) -> torch.Tensor:
    """Replace a random share p of labels by the null class (label dropout, Ho & Salimans 2022)."""
    if p <= 0:
        return labels
    drop = torch.rand(labels.shape, device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, num_classes), labels)


def sample_labels(n: int, num_classes: int, class_index: int | list[int] | None = None,
                  class_names: list[str] | None = None) -> torch.Tensor | None:
    """Labels for n samples: one requested class, a list of classes cycled, or all classes balanced."""
    if num_classes == 0:
        if class_index is not None:
            raise UserError("this model is unconditional: drop --class")
        return None
    if class_index is None:
        return torch.arange(n) % num_classes
    wanted = [class_index] if isinstance(class_index, int) else list(class_index)
    for c in wanted:
        if not 0 <= c < num_classes:
            names = f" ({', '.join(class_names)})" if class_names else ""
            raise UserError(f"class {c} is out of range: this model has classes 0..{num_classes - 1}{names}")
    return torch.tensor(wanted)[torch.arange(n) % len(wanted)]


def take(conditions: torch.Tensor | list[str] | None, index: list[int]) -> torch.Tensor | list[str] | None:
    """The per-image conditions at `index`: class labels (a tensor) or prompts (a list of strings)."""
    if conditions is None:
        return None
    if torch.is_tensor(conditions):
        return conditions[torch.as_tensor(index, dtype=torch.long)]
    return [conditions[i] for i in index]
