"""The machine a figure was measured on: one record for every benchmark, and that record (or an older file's way
of keeping it) in one line for the tables."""
from __future__ import annotations

import functools
import os
import platform

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # the flags that decide kernels and precision
# The kernels of a CPU without AVX-512 (as most laptops): not a real AVX2 laptop, by a factor that differs per CPU.
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def capped_env(avx2: bool = True) -> dict:
    """This process's environment, with the kernels capped to AVX2 when `avx2`."""
    return dict(os.environ, **(AVX2_ENV if avx2 else {}))


@functools.cache
def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU's model name and which of ISA_FLAGS it has, from /proc/cpuinfo (what lscpu shows)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return model, flags
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = sorted(set(value.split()) & set(ISA_FLAGS))
    return model, flags


def cpu_info(env=None) -> dict:
    """The CPU's model name and ISA flags, any kernel cap set to emulate an older CPU (ATEN_CPU_CAPABILITY,
    ONEDNN_MAX_CPU_ISA), the load average, the cores this process may use (taskset) and OMP_NUM_THREADS, which
    decide torch's thread count. `env`: the environment of the process the figures come from, when it is a child
    started with its own (default: this one's)."""
    env = os.environ if env is None else env
    model, flags = cpu_model_and_flags()
    return {"cpu": model, "isa_flags": flags,
            "kernels_capped_to": env.get("ATEN_CPU_CAPABILITY") or env.get("ONEDNN_MAX_CPU_ISA"),
            "load_average_1_5_15": list(os.getloadavg()),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "omp_num_threads": env.get("OMP_NUM_THREADS")}


def record(precision: str | None = None, env=None, **extra) -> dict:
    """The machine record every benchmark writes (under "machine"): cpu_info, torch's version and threads, the
    kernels ATen runs, the precision of the figures, and `extra` (a GPU, the cores pinned). With `env`, the figures
    come from a child process started with it: torch's threads are its OMP_NUM_THREADS (None: torch's default) and
    its kernels are what kernels_capped_to says, not this process's."""
    import torch

    info = cpu_info(env)
    here = env is None
    return {**info, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads() if here else int(info["omp_num_threads"] or 0) or None,
            "aten_cpu_capability": torch.backends.cpu.get_cpu_capability() if here else None,
            "precision": precision, **extra}


def _first(*values):
    return next((v for v in values if v not in (None, "", [])), None)


def _cap(d: dict, m: dict) -> str:
    if "kernels_capped_to" in m:
        return f"kernels capped to {m['kernels_capped_to']}" if m["kernels_capped_to"] else "native kernels"
    if d.get("training_kernels_capped_to"):
        return f"training capped to {d['training_kernels_capped_to']}, judged uncapped"
    if "kernels_capped_to" in d:
        return f"kernels capped to {d['kernels_capped_to']}" if d["kernels_capped_to"] else "native kernels"
    if "avx2_emulated" in d:
        return "kernels capped to avx2" if d["avx2_emulated"] else "native kernels"
    return "kernel cap not recorded"


def describe(d: dict, precision: str | None = None, threads=None) -> str:
    """The machine a result file records, in one line: CPU model (ISA flags), kernel cap, threads, precision.
    Older files keep these in other places (top level, "setup"); what a file does not record is said."""
    m = d.get("machine") if isinstance(d.get("machine"), dict) else {}
    setup = d.get("setup") if isinstance(d.get("setup"), dict) else {}
    cpu = _first(m.get("cpu"), d.get("cpu_model"), d.get("cpu"), m.get("cpu_model"))
    if cpu in (None, "x86_64"):
        cpu = "CPU model not recorded"
    flags = m.get("isa_flags") or [f for f in ISA_FLAGS if d.get(f) is True]
    t = _first(threads, d.get("threads"), d.get("torch_threads"), m.get("threads"), m.get("torch_threads"),
               setup.get("threads"), m.get("omp_num_threads"))
    if isinstance(t, int) or (isinstance(t, str) and t.isdigit()):
        t = f"{t} thread{'s' if int(t) != 1 else ''}"
    elif t is None:
        t = f"{m['cores_usable']} cores, torch's default threads" if m.get("cores_usable") else "threads not recorded"
    p = _first(precision, d.get("precision"), m.get("precision"), setup.get("precision"))
    return (f"{cpu} ({', '.join(flags) or 'ISA flags not recorded'}), {_cap(d, m)}, {t}, "
            f"{p or 'precision not recorded'}")
