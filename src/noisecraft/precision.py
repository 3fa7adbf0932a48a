"""Hardware policy shared by training and sampling: bf16 autocast and memory layout where the hardware runs them fast."""
from __future__ import annotations

import contextlib
import functools

import torch


@functools.cache
def cpu_has_amx_bf16() -> bool:
    """True on CPUs with AMX bf16 tiles (Sapphire Rapids and later), where oneDNN runs bf16 convs ~1.4x faster."""
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read(1 << 16)
    except OSError:
        return False


def use_bf16(device: torch.device | str, precision: str) -> bool:
    """`auto` means bf16 autocast on GPUs and on AMX CPUs, fp32 elsewhere (weights stay fp32 in all cases)."""
    device = torch.device(device)
    if precision == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_amx_bf16())
    return precision == "bf16"


def autocast_ctx(device: torch.device | str, precision: str):
    device = torch.device(device)
    if use_bf16(device, precision):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sampling_channels_last(device: torch.device | str, bf16: bool) -> bool:
    """NHWC activations for network calls while sampling. Measured: on GPUs (tensor cores) and on CPUs in fp32
    (oneDNN's NHWC convs; 1.45x the NCHW sampling rate for the digits U-Net on a 2-core AVX2 CPU) NHWC is faster;
    on AMX CPUs in bf16 PyTorch's NHWC GroupNorm kernel costs more than the convs gain, so NCHW stays there."""
    device = torch.device(device)
    return device.type == "cuda" or (device.type == "cpu" and not bf16)


def default_sampling_batch(device: torch.device | str, guided: bool) -> int:
    """Images per sampling batch. A CPU runs this size of network fastest at ~64 images per call (the activations
    stay in cache: 2x the rate of 512 per call measured on a 2-core CPU); guidance doubles the call's batch."""
    if torch.device(device).type == "cuda":
        return 256
    return 32 if guided else 64
