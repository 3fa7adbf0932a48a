"""Hardware policy shared by training and sampling: bf16 autocast and memory layout where the hardware runs them
fast."""
from __future__ import annotations

import contextlib
import functools

import torch


@functools.cache
def cpu_bf16_flags() -> frozenset[str]:
    """The CPU's native bf16 instructions, from /proc/cpuinfo: `amx_bf16` (Intel Sapphire Rapids and later) and
    `avx512_bf16` (Intel Cooper Lake, AMD Zen 4 and later). Empty where unknown (other OSes)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split()) & {"amx_bf16", "avx512_bf16"}
    except OSError:
        pass
    return frozenset()


def use_bf16(device: torch.device | str, precision: str) -> bool:
    """`auto` means bf16 autocast on GPUs and on CPUs with native bf16 instructions (AMX or AVX512-BF16), fp32
    elsewhere; weights stay fp32 in all cases. Measured for the digits U-Net on a 2-core AVX512-BF16 CPU (AMD
    EPYC, no AMX): bf16 trains 1.4-1.65x and samples ~1.55x faster than fp32 (benchmarks/throughput.py); on AMX
    CPUs ~1.4x for training. CPUs without native bf16 (AVX2 only) stay in fp32."""
    device = torch.device(device)
    if precision == "auto":
        return device.type == "cuda" or (device.type == "cpu" and bool(cpu_bf16_flags()))
    return precision == "bf16"


def autocast_ctx(device: torch.device | str, precision: str):
    device = torch.device(device)
    if use_bf16(device, precision):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sampling_channels_last(device: torch.device | str, bf16: bool) -> bool:
    """NHWC activations for network calls while sampling. Measured: on GPUs (tensor cores) and on CPUs in fp32
    (oneDNN's NHWC convs; 1.45x the NCHW sampling rate for the digits U-Net on a 2-core AVX2 CPU) NHWC is faster;
    on AMX CPUs in bf16 PyTorch's NHWC GroupNorm kernel costs more than the convs gain, so NCHW stays there (on an
    AVX512-BF16 CPU the two layouts measured within 2% in bf16 at 64 images per call)."""
    device = torch.device(device)
    return device.type == "cuda" or (device.type == "cpu" and not bf16)


def default_sampling_batch(device: torch.device | str, guided: bool) -> int:
    """Images per sampling batch. A CPU runs this size of network fastest at ~64 images per call (the activations
    stay in cache: 2x the rate of 512 per call measured on a 2-core CPU); guidance doubles the call's batch."""
    if torch.device(device).type == "cuda":
        return 256
    return 32 if guided else 64
