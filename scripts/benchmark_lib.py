"""Throughput measurements on synthetic ids, through the same train step and sampler the scripts use."""

import collections
import glob
import io
import os
import platform
import resource
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # the profiler's trace format

from tf_charrnn import cache, files
from tf_charrnn.data import encoded, pipeline
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.inference.sampling import Decoding, Sampler
from tf_charrnn.model import fused_lstm, native
from tf_charrnn.runtime import placement
from tf_charrnn.training import trainer
from tf_charrnn.training.train_step import TrainStep

# The matmul dtype of each --mixed_precision a sweep measures (its peak is that dtype's tf.matmul).
SWEEP_DTYPES = {"none": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}
# The instruction sets that decide which kernels run, as /proc/cpuinfo names them.
_CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16")


def peak_rss_mb():
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_ids(num_ids, vocab_size, seed=0):
    """int32 [num_ids] uniform random ids."""
    return np.random.default_rng(seed).integers(0, vocab_size, num_ids).astype(np.int32)


def _synthetic_training(config, num_batches):
    """The real training step of `config` on one device, and `num_batches` batches of synthetic ids."""
    layout = config.layout
    ids = synthetic_ids(layout.batch_size * layout.seq_length * num_batches + 1, config.model.vocab_size)
    train_step = TrainStep(config, placement.resolve(config.replace(strategy="default")))
    return train_step, list(pipeline.stream_dataset(ids, layout.batch_size, layout.seq_length, num_batches))


def recurrent_implementation(layers, step_precision=None):
    """What runs the time loops of the recurrent `layers` (with `step_precision`, their one-character steps on
    weights of that precision): fused_lstm's FUSED_FLOAT32, FUSED_BFLOAT16 (with what ran its products: "amx"
    or "avx512_bf16"; the step kernel's are always avx512_bf16) or KERAS_OPS, several joined by ' + ' where
    layers differ."""
    if step_precision is None:
        names = [layer.implementation() for layer in layers]
        products = native.bf16_products() if fused_lstm.FUSED_BFLOAT16 in names else ""
    else:
        names = [layer.step_implementation(step_precision) for layer in layers]
        products = "avx512_bf16"
    names = [f"{name} ({products})" if name == fused_lstm.FUSED_BFLOAT16 else name for name in names]
    return " + ".join(dict.fromkeys(names))


def train_flops_per_char(model_config):
    """The matmul FLOPs of one training step per character: forward (each LSTM layer's [in + H] x [4H]
    product, the [H] x [V] logits) and backward (twice the forward). The gates' elementwise work and the
    optimizer, a few percent at these sizes, are left out, so the GFLOP/s derived from it is a floor."""
    units, inputs = model_config.rnn_units, model_config.embedding_dim
    gate_columns = {"lstm": 4, "gru": 3, "rnn": 1}[model_config.cell] * units
    forward = 0
    for _ in range(model_config.num_layers):
        forward += 2 * (inputs + units) * gate_columns
        inputs = units
    forward += 2 * units * model_config.vocab_size
    return 3 * forward


def matmul_gflops(dtype, size=2048, repeats=5):
    """This CPU's matmul peak as TensorFlow reaches it (oneDNN): the best GFLOP/s of a [size, size] x
    [size, size] `tf.matmul` in `dtype` (tf.float32 or tf.bfloat16) over `repeats` runs."""
    a = tf.random.stateless_uniform([size, size], seed=[1, 2], dtype=tf.float32)
    a = tf.cast(a, dtype)
    float(tf.reduce_sum(tf.cast(tf.matmul(a, a)[:1, :1], tf.float32)))  # warm-up, allocation
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        product = tf.matmul(a, a)
        float(tf.cast(product[0, 0], tf.float32))  # waits for the product
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def measure_train(config, steps=8, warmup=2):
    """Median chars/s of the real training step (forward, loss, backward, clipping, Adam).

    Args:
      config: RunConfig with model.vocab_size set.
      steps, warmup: timed steps, and untimed ones before them (tracing, allocation).

    Returns:
      dict with chars_per_sec, sec_per_step and recurrent (what ran the LSTM's time loop, as
      `recurrent_implementation` names it).
    """
    train_step, batches = _synthetic_training(config, steps + warmup)
    times = []
    for inputs, targets in batches:
        started = time.perf_counter()
        float(train_step.train(inputs, targets, config.optimization.learning_rate)["loss"])
        times.append(time.perf_counter() - started)
    seconds = float(np.median(times[warmup:]))
    chars_per_step = config.layout.batch_size * config.layout.seq_length
    return {
        "chars_per_sec": chars_per_step / seconds,
        "sec_per_step": seconds,
        "recurrent": recurrent_implementation(train_step.model.recurrent_layers),
    }


def profile_train(config, profile_dir, steps=6, warmup=3, top=12):
    """Traces `steps` training steps with the TensorFlow profiler (the trace stays in `profile_dir`, for
    TensorBoard's profile plugin) and sums the time of each op type per step.

    Op time is summed over the threads that ran the ops, so on several threads it adds up to more than
    the wall time. On a GPU the device's own kernels are listed apart (cuDNN's RNN kernels among them
    when the LSTM runs on cuDNN).

    Returns:
      dict with ms_per_step (wall), host_ops {op type: ms per step} (the `top` largest, as TensorFlow
      names the op types, e.g. MatMul, CharRnnLstmSequence, CudnnRNNV3) and device_kernels {kernel: ms per
      step} (empty on a CPU).
    """
    train_step, batches = _synthetic_training(config, steps + warmup)
    for inputs, targets in batches[:warmup]:
        float(train_step.train(inputs, targets, config.optimization.learning_rate)["loss"])
    tf.profiler.experimental.start(profile_dir)
    started = time.perf_counter()
    for inputs, targets in batches[warmup:]:
        float(train_step.train(inputs, targets, config.optimization.learning_rate)["loss"])
    seconds = time.perf_counter() - started
    tf.profiler.experimental.stop()
    host_ops, device_kernels = _op_times(profile_dir)
    return {
        "ms_per_step": 1e3 * seconds / steps,
        "host_ops": {name: ps / 1e9 / steps for name, ps in host_ops.most_common(top)},
        "device_kernels": {name: ps / 1e9 / steps for name, ps in device_kernels.most_common(top)},
    }


def _op_times(profile_dir):
    """(host op type -> picoseconds, device kernel -> picoseconds) from the newest trace in `profile_dir`."""
    traces = glob.glob(os.path.join(profile_dir, "plugins", "profile", "*", "*.xplane.pb"))
    space = xplane_pb2.XSpace()
    with open(max(traces, key=os.path.getmtime), "rb") as f:
        space.ParseFromString(f.read())
    host_ops, device_kernels = collections.Counter(), collections.Counter()
    for plane in space.planes:
        names = {key: metadata.name for key, metadata in plane.event_metadata.items()}
        on_device = plane.name.startswith("/device:") and "CPU" not in plane.name
        for line in plane.lines:
            # The host's op events ("scope/name:OpType") are on the executor's threads (tf_Compute...);
            # a device's kernels on its streams ("Stream #N(...)"; the other lines are derived from them).
            if not line.name.startswith("Stream" if on_device else "tf_"):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if on_device:
                    device_kernels[name] += event.duration_ps
                elif ":" in name and "::" not in name:  # an op, not the executor's own ExecutorState::Process
                    op_type = name.rsplit(":", 1)[1].removeprefix("_Mkl")  # oneDNN's _MklMatMul is a MatMul
                    host_ops[op_type] += event.duration_ps
    return host_ops, device_kernels


def measure_sample(model_config, batch_size, length, streamed, step_precision="float32"):
    """Generated chars/s of the sampler (its steps on weights in `step_precision`): one compiled loop, or one
    compiled step per character.

    Returns:
      dict with chars_per_sec and recurrent (what ran the layers' steps).
    """
    vocab = Vocab([chr(0x4E00 + i) for i in range(model_config.vocab_size)])
    sampler = Sampler(
        model_config, fused_kernels=placement.fused_kernels_apply(), step_precision=step_precision
    )
    prime = vocab.chars[0]

    def run(chars):
        if streamed:
            for _ in sampler.stream(vocab, prime, chars, Decoding(seed=1), num_samples=batch_size):
                pass
        else:
            sampler.generate(vocab, prime, chars, Decoding(seed=1), num_samples=batch_size)

    run(20)  # tracing
    started = time.perf_counter()
    run(length)
    return {
        "chars_per_sec": batch_size * length / (time.perf_counter() - started),
        "recurrent": recurrent_implementation(sampler.model.recurrent_layers, step_precision),
    }


def write_synthetic_corpus(path, num_chars, alphabet, seed=0, chunk_size=1 << 20):
    """Writes `num_chars` random characters of `alphabet` (single-byte characters) to `path`, a chunk at
    a time (small, so that writing the corpus does not raise the peak memory being measured)."""
    rng = np.random.default_rng(seed)
    table = np.frombuffer(alphabet.encode("ascii"), dtype=np.uint8)
    with open(path, "wb") as f:
        for start in range(0, num_chars, chunk_size):
            picks = rng.integers(0, len(table), min(chunk_size, num_chars - start), dtype=np.uint8)
            f.write(table[picks].tobytes())


def write_synthetic_folder(folder, num_chars, alphabet, num_files):
    """Writes `num_chars` random characters of `alphabet` as `num_files` files of (nearly) equal size in
    `folder`, in two levels of subfolders (as a collection of documents is often stored)."""
    for index in range(num_files):
        path = os.path.join(folder, f"{index // 1000:03d}", f"{index % 1000 // 100:02d}", f"{index:06d}.txt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        size = num_chars // num_files + (index < num_chars % num_files)
        write_synthetic_corpus(path, size, alphabet, seed=index)


def measure_memory(config, corpus_mb, steps=2, num_files=1):
    """Peak RSS of encoding a synthetic corpus into the id cache, then of a real training run
    (`train.train`) of `steps` steps on it, validated on its last four batches.

    Run it in a fresh process: the peak covers everything the process did before.

    Args:
      config: RunConfig of the model to train.
      corpus_mb: the corpus's size in MiB.
      steps: training steps.
      num_files: > 1: the corpus is a folder of this many files (--data_path=FOLDER).

    Returns:
      dict with corpus_mb, num_files, ids_mb (the cached ids, memory-mapped by the trainer),
      cached_load_seconds (loading it again, as a later start does: the corpus hashed and its cache entry
      checked), cache_check_seconds (the check alone: the entry's files against their records),
      peak_rss_encode_mb (the process's peak once the corpus is encoded) and peak_rss_mb (once training
      has run).
    """
    alphabet = "".join(chr(c) for c in range(33, 33 + config.model.vocab_size))
    with tempfile.TemporaryDirectory() as folder:
        num_chars = int(corpus_mb * 2**20)
        if num_files > 1:
            corpus = os.path.join(folder, "corpus")
            write_synthetic_folder(corpus, num_chars, alphabet, num_files)
        else:
            corpus = os.path.join(folder, "corpus.txt")
            write_synthetic_corpus(corpus, num_chars, alphabet)
        layout = config.layout
        config = config.replace(
            data_path=corpus,
            cache_dir=folder,
            val_fraction=4 * (layout.batch_size * layout.seq_length + 1) / num_chars,
            train_dir=os.path.join(folder, "run"),
            max_steps=steps,
            eval_every=steps,
            sample_length=0,
        )
        corpus = encoded.load_corpus(config.data)
        ids_mb = corpus.ids.nbytes / 2**20
        peak_rss_encode_mb = peak_rss_mb()
        started = time.perf_counter()
        encoded.load_corpus(config.data)  # a later start: the corpus hashed, its cache entry checked
        cached_load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for suffix in (".ids.npy", ".vocab.json"):
            assert cache.problem(os.path.join(folder, "encoded", corpus.sha256 + suffix)) is None
        cache_check_seconds = time.perf_counter() - started
        trainer.train(config)
    return {
        "corpus_mb": corpus_mb,
        "num_files": num_files,
        "ids_mb": ids_mb,
        "cached_load_seconds": cached_load_seconds,
        "cache_check_seconds": cache_check_seconds,
        "peak_rss_encode_mb": peak_rss_encode_mb,
        "peak_rss_mb": peak_rss_mb(),
    }


def cpu_description():
    """E.g. 'AMD EPYC 9R14, 2 CPUs (avx2 avx512f avx512_bf16)': the model, the CPUs this process may use and
    the instruction sets among _CPU_FEATURES it has (Linux' /proc/cpuinfo; elsewhere the platform's name)."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    features = " ".join(feature for feature in _CPU_FEATURES if feature in flags)
    return f"{model}, {len(os.sched_getaffinity(0))} CPUs" + (f" ({features})" if features else "")


def sweep_figures(summary, model_config, peak_gflops):
    """What a sweep adds to the summary of one size's alternated rounds: the medians, the GFLOP/s they
    mean (`train_flops_per_char`) and the CPU's matmul peak in that precision beside them."""
    flops = train_flops_per_char(model_config)
    ours, peer = statistics.median(summary["chars_per_sec"]), statistics.median(summary["peer_chars_per_sec"])
    return {
        "precision": "float32" if summary["mixed_precision"] == "none" else summary["mixed_precision"],
        "median_chars_per_sec": ours,
        "median_peer_chars_per_sec": peer,
        "gflops": ours * flops / 1e9,
        "peer_gflops": peer * flops / 1e9,
        "matmul_peak_gflops": peak_gflops,
    }


def sweep_table(rows, cpu):
    """The sweep as a Markdown table (one line per size and precision), under a line naming the CPU."""
    lines = [
        f"CPU: {cpu}",
        "",
        "| units | precision | ours chars/s | peer chars/s | ratio | ours GFLOP/s | peer GFLOP/s "
        "| matmul peak GFLOP/s | ours ran on |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['rnn_units']} | {row['precision']} | {row['median_chars_per_sec']:,.0f} | "
            f"{row['median_peer_chars_per_sec']:,.0f} | {row['ratio_vs_peer']:.2f}x | {row['gflops']:.1f} | "
            f"{row['peer_gflops']:.1f} | {row['matmul_peak_gflops']:.0f} | {row['recurrent']} |"
        )
    return "\n".join(lines) + "\n"


def sweep_plot(rows, cpu):
    """PNG bytes: the ratio to the peer (left) and GFLOP/s of both beside the matmul peak (right) against
    the units, one line per precision."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot

    figure, (ratio_axes, speed_axes) = pyplot.subplots(1, 2, figsize=(11, 4.2))
    for index, precision in enumerate(dict.fromkeys(row["precision"] for row in rows)):
        color = f"C{index}"
        chosen = [row for row in rows if row["precision"] == precision]
        units = [row["rnn_units"] for row in chosen]
        ratio_axes.plot(units, [row["ratio_vs_peer"] for row in chosen], "o-", color=color, label=precision)
        speed_axes.plot(
            units, [row["gflops"] for row in chosen], "o-", color=color, label=f"ours, {precision}"
        )
        speed_axes.plot(
            units, [row["peer_gflops"] for row in chosen], "s--", color=color, label=f"peer, {precision}"
        )
        peak = chosen[0]["matmul_peak_gflops"]
        speed_axes.axhline(peak, color=color, linestyle=":", label=f"matmul peak, {precision}")
    ratio_axes.axhline(1.0, color="gray", linewidth=0.8)
    ratio_axes.set_ylabel("ours / peer (chars/s, median of rounds)")
    speed_axes.set_ylabel("training GFLOP/s")
    for axes in (ratio_axes, speed_axes):
        axes.set_xscale("log", base=2)
        axes.set_xticks([row["rnn_units"] for row in rows])
        axes.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axes.set_xlabel("LSTM units (2 layers)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle(f"Training against the PyTorch peer: {cpu}", fontsize=9)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=110)
    pyplot.close(figure)
    return image.getvalue()


def write_sweep(prefix, rows, cpu):
    """Writes the table to `prefix`.md and the plot to `prefix`.png, each atomically."""
    files.write_atomic(prefix + ".md", sweep_table(rows, cpu))
    files.write_atomic(prefix + ".png", sweep_plot(rows, cpu))
