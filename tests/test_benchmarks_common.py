"""benchmarks/common: the machine record every benchmark writes, and the line the tables make of it or of an older
result file's layout."""
import os

from common.machine import AVX2_ENV, capped_env, describe, record


def test_a_child_record_names_its_kernel_cap_threads_and_precision():
    r = record("fp32", {**AVX2_ENV, "OMP_NUM_THREADS": "1"}, pinned_cpus=[0])
    assert (r["kernels_capped_to"], r["torch_threads"], r["precision"], r["pinned_cpus"]) == ("avx2", 1, "fp32", [0])
    line = describe({"machine": r})
    assert line.startswith(f"{r['cpu']} (") and line.endswith("), kernels capped to avx2, 1 thread, fp32")


def test_describe_reads_the_older_layouts():
    top_level = {"cpu_model": "CPU A", "avx2": True, "avx512_bf16": False, "threads": 2, "precision": "bf16"}
    assert describe(top_level) == "CPU A (avx2), kernel cap not recorded, 2 threads, bf16"
    quickstart = {"machine": {"cpu": "CPU B", "isa_flags": ["avx2"], "cores_usable": 2}, "avx2_emulated": True}
    assert describe(quickstart, precision="fp32") == ("CPU B (avx2), kernels capped to avx2, 2 cores, torch's default "
                                                      "threads, fp32")


def test_capped_env_adds_the_avx2_cap_only_when_asked():
    assert all(capped_env(True)[k] == v for k, v in AVX2_ENV.items())
    assert capped_env(False).get("ONEDNN_MAX_CPU_ISA") == os.environ.get("ONEDNN_MAX_CPU_ISA")
