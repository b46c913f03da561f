"""Throughput measurements on synthetic ids, through the same train step and sampler the scripts use."""

import collections
import glob
import os
import resource
import tempfile
import time

import numpy as np
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # the profiler's trace format

from tf_charrnn import data as data_lib
from tf_charrnn import runtime as runtime_lib
from tf_charrnn import training as train_lib
from tf_charrnn.sampling import Sampler
from tf_charrnn.train_step import TrainStep
from tf_charrnn.vocab import Vocab


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
    train_step = TrainStep(config, runtime_lib.resolve(config.replace(strategy="default")))
    return train_step, list(data_lib.stream_dataset(ids, layout.batch_size, layout.seq_length, num_batches))


def measure_train(config, steps=8, warmup=2):
    """Median chars/s of the real training step (forward, loss, backward, clipping, Adam).

    Args:
      config: RunConfig with model.vocab_size set.
      steps, warmup: timed steps, and untimed ones before them (tracing, allocation).

    Returns:
      dict with chars_per_sec and sec_per_step.
    """
    train_step, batches = _synthetic_training(config, steps + warmup)
    times = []
    for inputs, targets in batches:
        started = time.perf_counter()
        float(train_step.train(inputs, targets, config.optimization.learning_rate)["loss"])
        times.append(time.perf_counter() - started)
    seconds = float(np.median(times[warmup:]))
    chars_per_step = config.layout.batch_size * config.layout.seq_length
    return {"chars_per_sec": chars_per_step / seconds, "sec_per_step": seconds}


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


def measure_sample(model_config, batch_size, length, streamed):
    """Generated chars/s of the sampler: one compiled loop, or one compiled step per character.

    Returns:
      dict with chars_per_sec.
    """
    vocab = Vocab([chr(0x4E00 + i) for i in range(model_config.vocab_size)])
    sampler = Sampler(model_config, fused_kernels=runtime_lib.fused_kernels_apply())
    prime = vocab.chars[0]

    def run(chars):
        if streamed:
            for _ in sampler.stream(vocab, prime, chars, num_samples=batch_size, seed=1):
                pass
        else:
            sampler.generate(vocab, prime, chars, num_samples=batch_size, seed=1)

    run(20)  # tracing
    started = time.perf_counter()
    run(length)
    return {"chars_per_sec": batch_size * length / (time.perf_counter() - started)}


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
        ids_mb = data_lib.load_corpus(config.data).ids.nbytes / 2**20
        peak_rss_encode_mb = peak_rss_mb()
        train_lib.train(config)
    return {
        "corpus_mb": corpus_mb,
        "num_files": num_files,
        "ids_mb": ids_mb,
        "peak_rss_encode_mb": peak_rss_encode_mb,
        "peak_rss_mb": peak_rss_mb(),
    }
