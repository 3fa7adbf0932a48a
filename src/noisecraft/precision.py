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


def kernels_capped_below_avx512() -> bool:
    """True when PyTorch's kernels (ATEN_CPU_CAPABILITY) or oneDNN's (ONEDNN_MAX_CPU_ISA) are limited to less than
    AVX-512, as when emulating an AVX2 CPU on a newer one: bf16 then runs emulated, slower than fp32."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        return True
    try:
        return not torch.ops.mkldnn._is_mkldnn_bf16_supported()  # oneDNN's own check, which honours its ISA cap
    except (AttributeError, RuntimeError):
        return False


def use_bf16(device: torch.device | str, precision: str) -> bool:
    """`auto` means bf16 autocast where bf16 is native and fast: GPUs, and CPUs with AMX or AVX512-BF16 whose
    kernels are not capped below AVX-512; fp32 elsewhere (AVX2-only CPUs emulate bf16, slower than fp32). Weights
    stay fp32 in all cases. Measured figures per CPU: README and benchmarks/results/."""
    device = torch.device(device)
    if precision == "auto":
        if device.type == "cuda":
            return True
        return device.type == "cpu" and bool(cpu_bf16_flags()) and not kernels_capped_below_avx512()
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
