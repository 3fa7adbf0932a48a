"""What every benchmark records about the machine it ran on, so a figure always names its CPU."""
from __future__ import annotations

import os
import platform


def cpu_info() -> dict:
    """The CPU's model name, the ISA flags that decide kernels and precision (/proc/cpuinfo), any kernel cap set
    to emulate an older CPU (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA), the load average, and the cores this
    process may use (taskset) and OMP_NUM_THREADS, which decide torch's thread count."""
    info = {"cpu": platform.processor() or platform.machine(), "isa_flags": [],
            "kernels_capped_to": os.environ.get("ATEN_CPU_CAPABILITY") or os.environ.get("ONEDNN_MAX_CPU_ISA"),
            "load_average_1_5_15": list(os.getloadavg()),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
    except OSError:
        return info
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            info["cpu"] = value.strip()
        elif key.strip() == "flags":
            info["isa_flags"] = sorted(set(value.split()) & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    return info


def write_result(result: dict, out_dir: str, name: str) -> str:
    """Print `result` as strict JSON and write it to `out_dir/name.json`; returns the text."""
    from pathlib import Path

    from noisecraft.config import to_json

    text = to_json(result)
    print(text)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(text + "\n")
    return text
