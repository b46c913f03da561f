"""The fused C++ kernels (tf_charrnn/model/kernels/): built from source against the installed TensorFlow
on first use, cached, loaded.

The sources ship inside the package (wheel and sdist carry tf_charrnn/model/kernels/*.cc and *.h). They are
compiled for this machine's CPU (-march=native) with the compile and link flags TensorFlow reports,
and with AVX512-FP16 turned off where the compiler knows it (`compile_flags`: Eigen's half-precision
packets inside TensorFlow's headers do not compile with it under g++ 12, and the kernels use no
float16, so Sapphire Rapids and later Xeons build the same code as any AVX-512 CPU),
into $TF_CHARRNN_CACHE/native/ under a name keyed by the sources, TensorFlow's version and the CPU, so
a changed source or another machine gets its own build; the first build (the sources compiled side by
side, one per CPU: about 40 s on 2 cores) logs one info line. A library is used only if it has every op
the package calls (`OPS`). Where the kernels cannot be built or loaded (no C++ compiler, no sources, an
incompatible TensorFlow, a library missing an op) `load()` logs why once and returns None
(`build_error()` gives the message), and callers keep TensorFlow's own ops; TF_CHARRNN_NATIVE=0 turns
them off. The compiler is $CXX, else g++.

The bfloat16 ops (`BF16_OPS`, kernels/lstm_sequence_bf16.cc: recurrent products on AVX512-BF16's
vdpbf16ps) are compiled only where -march=native targets AVX512-BF16, so the library has them exactly
where this CPU and compiler support them; `bfloat16_kernels()` says whether the mixed_bfloat16 policy
runs on them (else on the float32 kernels) and logs the choice once. Their recurrent products run on AMX
tiles where the CPU has AMX-BF16 and the OS grants it (`bf16_products()`, kernels/amx.h); TF_CHARRNN_AMX=0
keeps AVX512-BF16 there, and TF_CHARRNN_AMX=emulate runs the tile code through a software model on any CPU
(tests). TF_CHARRNN_BF16_KERNELS chooses: auto (the default) runs bfloat16 on them except on an Intel CPU
whose products would be AVX512-BF16's (no AMX, or AMX hidden by a VM), where they measured 0.67x to 0.75x
the float32 kernels' speed (as TensorFlow's own bfloat16 matmul reached 0.56x its float32 one there;
docs/performance.md, "Intel Xeon without AMX"); 1 runs them wherever the library has them, 0 never.

    python -m tf_charrnn.model.native    # builds now (as .ci/run does) and prints the library's path
"""

import concurrent.futures
import functools
import glob
import hashlib
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from types import ModuleType

import tensorflow as tf
from absl import logging

from tf_charrnn import cache as cache_lib
from tf_charrnn import files
from tf_charrnn.errors import UserError

KERNELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
SOURCES = sorted(glob.glob(os.path.join(KERNELS_DIR, "*.cc")))
# The ops the package calls (fused_lstm.py, dropout.py, losses.py, training/optimizer.py), as attributes of
# the loaded module.
OPS = (
    "char_rnn_lstm_sequence",
    "char_rnn_lstm_sequence_grad",
    "char_rnn_model_step",
    "char_rnn_dropout",
    "char_rnn_dropout_grad",
    "char_rnn_adam",
    "char_rnn_adam_slices",
    "char_rnn_softmax_cross_entropy",
)
# The bfloat16 ops, in the library only where the CPU and compiler support AVX512-BF16.
BF16_OPS = ("char_rnn_lstm_sequence_bf16", "char_rnn_lstm_sequence_bf16_grad", "char_rnn_bf16_products")
# The int8 sampling step, in the library only where the CPU and compiler support AVX512-VNNI.
INT8_OPS = ("char_rnn_model_step_int8",)
_FLAGS = ["-shared", "-fPIC", "-O3", "-Wno-deprecated-declarations"]
# Instruction sets the kernels never use and TensorFlow's headers cannot be compiled with, turned off
# where the compiler knows the option (g++ 12: Eigen's PacketMathFP16.h under __AVX512FP16__).
_UNUSED_ISA_FLAGS = ("-mno-avx512fp16",)


class NativeBuildError(RuntimeError):
    """The kernels could not be compiled or loaded here."""


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CXX", "g++"))


@functools.cache
def _compiler_accepts(flag: str) -> bool:
    """Whether the compiler takes `flag` (preprocessing an empty file with it succeeds)."""
    try:
        result = subprocess.run(
            [*_compiler(), flag, "-x", "c++", "-E", os.devnull], capture_output=True, text=True
        )
    except OSError:
        return False
    return result.returncode == 0


def compile_flags(march: str = "native") -> list[str]:
    """The compiler flags of a build for the CPU `march` (-march=`march`), before TensorFlow's own."""
    return [*_FLAGS, f"-march={march}", *(flag for flag in _UNUSED_ISA_FLAGS if _compiler_accepts(flag))]


def _cpu_signature() -> str:
    """The CPU model and instruction-set flags, where the OS tells them (a build uses them all)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def library_path(cache: str = "") -> str:
    """Where the library for these sources, this TensorFlow and this CPU lives."""
    digest = hashlib.sha256()
    for source in sorted(glob.glob(os.path.join(KERNELS_DIR, "*"))):  # sources and headers
        with open(source, "rb") as f:
            digest.update(f.read())
    build = [*_compiler(), *compile_flags(), *tf.sysconfig.get_compile_flags()]
    for part in [tf.__version__, _cpu_signature(), *build]:
        digest.update(part.encode())
    return os.path.join(files.cache_dir(cache), "native", f"tf_charrnn_kernels-{digest.hexdigest()[:16]}.so")


def _check_sources() -> None:
    if not SOURCES:
        raise NativeBuildError(
            f"no kernel sources (*.cc) in {KERNELS_DIR}: the package was installed without them"
        )


def _build_jobs() -> int:
    """How many compilers a build runs at once: one per CPU this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call on this OS
        return os.cpu_count() or 1


def _run_compiler(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise NativeBuildError(f"compiling the fused kernels failed ({shlex.join(command[:1])}):\n{tail}")


def build(path: str) -> None:
    """Compiles the kernels to `path` with a record of its size and hash: each source to an object file,
    as many at once as this process has CPUs, then one link (in a temporary folder beside `path`, so a
    failed or concurrent build never leaves a broken library there). Raises NativeBuildError with the
    compiler's last lines, or where the package holds no kernel sources."""
    _check_sources()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    flags = compile_flags()
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path), prefix=".tmp-build-") as scratch:
        objects = [os.path.join(scratch, os.path.basename(source) + ".o") for source in SOURCES]
        compiles = [
            [*_compiler(), *flags, "-c", source, "-o", obj, *tf.sysconfig.get_compile_flags()]
            for source, obj in zip(SOURCES, objects, strict=True)
        ]
        library = os.path.join(scratch, "kernels.so")
        link = [*_compiler(), *flags, *objects, "-o", library, *tf.sysconfig.get_link_flags()]
        try:
            with concurrent.futures.ThreadPoolExecutor(min(_build_jobs(), len(compiles))) as pool:
                list(pool.map(_run_compiler, compiles))  # raises the first failure, in source order
            _run_compiler(link)
        except FileNotFoundError as error:
            raise NativeBuildError(f"no C++ compiler: {error}") from error
        cache_lib.publish(library, path)


def build_and_load(cache: str = "") -> ModuleType:
    """The loaded kernel module, building it first where this machine has none (one info line), or where
    the library there fails its check (one warning).

    Raises:
      NativeBuildError: no kernel sources, a failed build or load, or a library without one of `OPS`.
      UserError: the library is damaged and the cache is read-only (the line names what to delete).
    """
    _check_sources()  # else a library built from nothing would load, without a single op
    path = library_path(cache)
    # Checked against its record first: a truncated library would crash the interpreter when loaded.
    if not cache_lib.check_before_use(path, "the compiled kernel library", f"the sources in {KERNELS_DIR}"):
        with cache_lib.folder_lock(_made(os.path.dirname(path))):  # one process builds, the others wait
            if cache_lib.problem(path) is not None:
                logging.info(
                    "Compiling the fused LSTM kernels once (about 40 s on 2 cores), cached in %s; "
                    "TF_CHARRNN_NATIVE=0 skips it.",
                    path,
                )
                build(path)
    try:
        module = tf.load_op_library(path)
    except (tf.errors.NotFoundError, OSError) as error:
        raise NativeBuildError(f"loading {path} failed: {error}") from error
    missing = [op for op in OPS if not hasattr(module, op)]
    if missing:
        raise NativeBuildError(f"{path} lacks the ops {', '.join(missing)}")
    return module


def _made(folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    return folder


# Why `load` found no kernels: the build's or loader's message (None: they loaded, or were turned off).
_build_error = None


@functools.cache
def load() -> ModuleType | None:
    """The kernel module (ops char_rnn_lstm_sequence, ...), or None where TF_CHARRNN_NATIVE=0 or it
    cannot be built here (logged once)."""
    global _build_error
    if os.environ.get("TF_CHARRNN_NATIVE", "1") == "0":
        return None
    try:
        module = build_and_load()
    except (NativeBuildError, OSError) as error:
        logging.warning("fused LSTM kernels unavailable, using TensorFlow's ops: %s", error)
        _build_error = str(error)
        return None
    _build_error = None
    return module


def build_error() -> str | None:
    """Why the kernels could not be built or loaded here (the compiler's or loader's message), or None:
    they loaded, or TF_CHARRNN_NATIVE=0 turned them off. Builds them first where needed, as `load`."""
    load()
    return _build_error


# TF_CHARRNN_AMX: where the bfloat16 kernels run their recurrent products (kernels/amx.h).
AMX_SETTINGS = ("auto", "0", "emulate")


def bf16_products() -> str | None:
    """What the loaded bfloat16 kernels run their recurrent products on in this process: "amx",
    "amx (emulated)" or "avx512_bf16" (chosen once, by the CPU, the OS and TF_CHARRNN_AMX); None where
    the library has no bfloat16 ops. Asked eagerly whatever the caller is tracing (the first call may
    come from inside a tf.function, e.g. a scorer's loss).

    Raises:
      UserError: TF_CHARRNN_AMX is set to something else than auto, 0 or emulate.
    """
    _env_setting("TF_CHARRNN_AMX", AMX_SETTINGS)
    module = load()
    if module is None or not all(hasattr(module, op) for op in BF16_OPS):
        return None
    return _products_of(module)


@functools.cache
def _products_of(module: ModuleType) -> str:
    with tf.init_scope():  # out of any graph being traced: the op's answer is a value, not a symbol
        return module.char_rnn_bf16_products().numpy().decode()


# TF_CHARRNN_BF16_KERNELS: whether mixed_bfloat16 runs the LSTM on the bfloat16 kernels.
BF16_KERNEL_SETTINGS = ("auto", "1", "0")


def _cpu_vendor() -> str:
    """/proc/cpuinfo's vendor_id ("GenuineIntel", "AuthenticAMD"), or "" where the OS does not say."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _env_setting(name: str, settings: tuple[str, ...]) -> str:
    """The environment variable `name` (default: the first of `settings`), once checked to be one of them.

    Raises:
      UserError: it is set to something else.
    """
    setting = os.environ.get(name, settings[0])
    if setting not in settings:
        raise UserError(f"{name}={setting!r} is not a setting; use one of {', '.join(settings)}")
    return setting


def bfloat16_ops() -> bool:
    """Whether the loaded library has the bfloat16 ops and TF_CHARRNN_BF16_KERNELS is not 0: what a
    bfloat16 sampling step runs on (at batch 1 it reads its weights, and half the bytes pay on any CPU).

    Raises:
      UserError: TF_CHARRNN_BF16_KERNELS is set to something else than auto, 1 or 0.
    """
    return (
        _env_setting("TF_CHARRNN_BF16_KERNELS", BF16_KERNEL_SETTINGS) != "0" and bf16_products() is not None
    )


def int8_ops() -> bool:
    """Whether the loaded library has the int8 sampling step (CharRnnModelStepInt8: AVX512-VNNI)."""
    module = load()
    return module is not None and all(hasattr(module, op) for op in INT8_OPS)


@functools.cache
def bfloat16_kernels() -> bool:
    """Whether mixed_bfloat16 training and scoring run the LSTM on the bfloat16 kernels
    (TF_CHARRNN_BF16_KERNELS, see the module docstring); decided and logged once. False where the kernels
    are off or unavailable.

    Raises:
      UserError: TF_CHARRNN_BF16_KERNELS is set to something else than auto, 1 or 0.
    """
    setting = _env_setting("TF_CHARRNN_BF16_KERNELS", BF16_KERNEL_SETTINGS)
    if load() is None:
        return False
    if setting == "0":
        logging.info("bfloat16 LSTM layers run on the float32 fused kernels: TF_CHARRNN_BF16_KERNELS=0")
        return False
    products = bf16_products()
    if products is None:
        logging.info(
            "bfloat16 LSTM layers run on the float32 fused kernels: this CPU or compiler lacks AVX512-BF16 "
            "(a bfloat16 config such as configs/shakespeare_cpu.cfg may run faster here with "
            "--mixed_precision=none)"
        )
        return False
    if setting == "auto" and products == "avx512_bf16" and _cpu_vendor() == "GenuineIntel":
        logging.info(
            "bfloat16 LSTM layers run on the float32 fused kernels: on an Intel CPU without AMX, "
            "AVX512-BF16's products are no faster than float32's (TF_CHARRNN_BF16_KERNELS=1 uses them "
            "anyway; a bfloat16 config may run as fast here with --mixed_precision=none)"
        )
        return False
    logging.info("bfloat16 LSTM layers run on the bfloat16 fused kernels (recurrent products: %s)", products)
    return True


if __name__ == "__main__":
    try:
        build_and_load()
        products = bf16_products()
    except (NativeBuildError, UserError) as error:
        sys.exit(f"error: {error}")
    print("bfloat16 ops:", f"yes (recurrent products: {products})" if products else "no (no AVX512-BF16)")
    print(library_path())
