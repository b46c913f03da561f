"""The fused kernels compile for CPUs this machine is not: each -march target the installed compiler
knows, with the flags native.py would use there (compile only, -O0, the sources as one translation
unit), so a build break on another CPU family fails CI here."""

import concurrent.futures
import os
import subprocess

import pytest
import tensorflow as tf

from tf_charrnn.model import native

# x86-64: SSE4.2 only, AVX2, AVX-512 without BF16, with BF16, with FP16 and AMX, Zen 3/4/5.
TARGETS = (
    "x86-64-v2",
    "x86-64-v3",
    "skylake-avx512",
    "cooperlake",
    "sapphirerapids",
    "graniterapids",
    "znver3",
    "znver4",
    "znver5",
)


def _known(march):
    return native._compiler_accepts(f"-march={march}")


def _compile(march, tmp_path):
    unit = tmp_path / f"kernels-{march}.cc"
    unit.write_text("".join(f'#include "{source}"\n' for source in native.SOURCES))
    flags = [flag for flag in native.compile_flags(march) if flag not in ("-shared", "-O3")]
    command = [*native._compiler(), *flags, "-O0", "-c", str(unit), "-o", os.devnull]
    command += tf.sysconfig.get_compile_flags()
    return subprocess.run(command, capture_output=True, text=True)


def test_the_kernels_compile_for_every_known_cpu_target(tmp_path):
    targets = [march for march in TARGETS if _known(march)]
    if not targets:
        pytest.skip("the C++ compiler targets no x86-64 CPU (e.g. aarch64): only -march=native is built")
    assert {"x86-64-v2", "x86-64-v3", "skylake-avx512", "sapphirerapids"} <= set(targets)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = dict(zip(targets, pool.map(lambda march: _compile(march, tmp_path), targets), strict=True))
    failed = {
        march: result.stderr.strip().splitlines()[-3:]
        for march, result in results.items()
        if result.returncode
    }
    assert not failed, failed


def test_sapphire_rapids_needs_the_fp16_flag_and_gets_it():
    # Without -mno-avx512fp16 TensorFlow's Eigen headers fail under g++ 12 there: the flag must be in the
    # build wherever the compiler knows AVX512-FP16.
    if not native._compiler_accepts("-mavx512fp16"):
        pytest.skip("this compiler knows no AVX512-FP16")
    assert "-mno-avx512fp16" in native.compile_flags("sapphirerapids")
    assert "-mno-avx512fp16" in native.compile_flags()
