"""Which device a run or a sampling job uses: the lowest layer, beside `precision` (no noisecraft imports but
errors), so the trainer, the pipeline and the CLI all pick devices the same way."""
from __future__ import annotations

import torch

from noisecraft.errors import UserError


def pick_device(name: str = "auto") -> torch.device:
    """`auto` is the first CUDA GPU when there is one, else the CPU; `cuda` without CUDA is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
