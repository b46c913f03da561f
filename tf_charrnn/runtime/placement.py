"""What runs where, decided once at start: strategy and replicas, precision, XLA, unrolling, fused kernels.

Layers, the sampler and the training loop take these decisions as arguments; none of them looks at the
machine's devices itself.
"""

import dataclasses

import keras
import tensorflow as tf

from tf_charrnn.config import MIXED_PRECISION_POLICIES, RunConfig
from tf_charrnn.model import native
from tf_charrnn.runtime import distribute

# Longer windows unroll into graphs that take too long to trace.
MAX_UNROLLED_SEQ_LENGTH = 256


@dataclasses.dataclass(frozen=True)
class Runtime:
    """The decisions, resolved once (see `resolve`)."""

    strategy: tf.distribute.Strategy
    replicas: int
    replica_batch_size: int  # streams each replica holds
    is_chief: bool  # writes checkpoints, logs and config.json
    single_device: bool  # the default strategy: no replicas to reduce over
    dtype_policy: keras.DTypePolicy | None  # of the embedding and recurrent layers; None: float32
    loss_scaling: bool  # float16: Adam in a LossScaleOptimizer
    jit_compile: bool
    unroll: bool  # unroll the recurrent layers' time loop when traced (GRU, RNN, and LSTM off the kernels)
    fused_kernels: bool  # LSTM layers run on the fused C++ kernels (training and sampling)
    bfloat16_kernels: bool  # ... and, under mixed_bfloat16, on their bfloat16 variant (AVX512-BF16)
    devices: str  # the kinds of device the replicas run on, e.g. "CPU" or "GPU"

    def describe(self) -> str:
        """E.g. '1 replica on CPU' or '2 replicas on GPU'."""
        return f"{self.replicas} replica{'s' if self.replicas > 1 else ''} on {self.devices}"


def on_gpu() -> bool:
    """Whether TensorFlow sees a GPU (its layers then run there, the LSTM on cuDNN)."""
    return bool(tf.config.list_physical_devices("GPU"))


def grow_gpu_memory() -> None:
    """Lets TensorFlow take GPU memory as it needs it rather than nearly all of it at start, so that a
    sampler or an evaluation can run beside a training run on the same GPU. Call it before anything runs
    on a GPU; without GPUs it does nothing. (CUDA_VISIBLE_DEVICES chooses the GPUs.)"""
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def dtype_policy(mixed_precision: str) -> keras.DTypePolicy | None:
    """The Keras dtype policy of the embedding and recurrent layers for --mixed_precision; None: float32."""
    policy = MIXED_PRECISION_POLICIES[mixed_precision]
    return None if policy is None else keras.DTypePolicy(policy)


def fused_kernels_apply(strategy: tf.distribute.Strategy | None = None, jit_compile: bool = False) -> bool:
    """The fused C++ LSTM kernels run on CPUs, outside XLA and TPUs, where they can be built (this may
    build them, once per machine)."""
    return (
        not on_gpu()
        and not jit_compile
        and not isinstance(strategy, tf.distribute.TPUStrategy)
        and native.load() is not None
    )


def resolve(config: RunConfig) -> Runtime:
    """Creates the strategy (before any other op, as MultiWorkerMirroredStrategy needs) and decides the
    rest for the run described by `config` (a RunConfig).

    Raises:
      UserError: no TPU or TF_CONFIG where the strategy needs one, or a batch the replicas do not divide.
    """
    grow_gpu_memory()
    strategy = distribute.make_strategy(config.runtime.strategy, config.runtime.tpu)
    on_tpu = isinstance(strategy, tf.distribute.TPUStrategy)
    single_device = distribute.is_default(strategy)
    fused_kernels = fused_kernels_apply(strategy, config.runtime.jit_compile)
    return Runtime(
        strategy=strategy,
        replicas=strategy.num_replicas_in_sync,
        replica_batch_size=distribute.replica_batch_size(strategy, config.layout.batch_size),
        is_chief=distribute.is_chief(strategy),
        single_device=single_device,
        dtype_policy=dtype_policy(config.precision.mixed_precision),
        loss_scaling=config.precision.mixed_precision == "float16",
        jit_compile=config.runtime.jit_compile,
        unroll=not on_gpu() and not on_tpu and config.layout.seq_length <= MAX_UNROLLED_SEQ_LENGTH,
        fused_kernels=fused_kernels,
        # native.bfloat16_kernels() decides (and logs) once; FusedLSTM asks it again.
        bfloat16_kernels=fused_kernels
        and config.precision.mixed_precision == "bfloat16"
        and native.bfloat16_kernels(),
        devices=("GPU" if on_gpu() else "CPU") if single_device else _device_kinds(strategy),
    )


def _device_kinds(strategy: tf.distribute.Strategy) -> str:
    names = strategy.extended.worker_devices  # e.g. /job:localhost/replica:0/task:0/device:GPU:0
    return ", ".join(sorted({name.split("device:")[-1].split(":")[0] for name in names}))
