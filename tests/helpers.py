"""Plain helpers the tests share (fixtures and hooks live in conftest.py): paths, a short text, configs,
running the scripts in subprocesses, reading TensorBoard logs, comparing two models.

Imported as `from helpers import ...` (pytest puts tests/ on sys.path: tests/ is no package).
"""

import dataclasses
import hashlib
import os
import queue
import shutil
import subprocess
import sys
import threading

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_CORPUS = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "tinyshakespeare", "input.txt")
SMOKE_CONFIG = os.path.join(REPO_ROOT, "configs", "smoke.cfg")
QUOTE = "Knowing is not enough; we must apply. Willing is not enough; we must do."


def make_config(corpus, cache, train_dir, /, **flat_values):
    """A RunConfig training on `corpus` with the id cache in `cache` into `train_dir`; every other field
    from `flat_values` (flat field names of any section, e.g. a test file's defaults and a test's own
    values) or its default."""
    from tf_charrnn.config import RunConfig

    return RunConfig.from_flat(
        {**flat_values, "data_path": str(corpus), "cache_dir": str(cache), "train_dir": str(train_dir)}
    )


def train_tiny_run(root, **flat_values):
    """Trains a tiny run on QUOTE into root/run (cache root/cache), 40 steps of batch 4 x 12, no dropout;
    `flat_values` (e.g. rnn_units) on top. Returns the run directory."""
    from tf_charrnn.training import trainer

    corpus = root / "corpus.txt"
    corpus.write_text((QUOTE + " ") * 8, encoding="utf-8")
    defaults = dict(batch_size=4, seq_length=12, num_layers=2, dropout=0.0, max_steps=40, learning_rate=0.01)
    values = {**defaults, "eval_every": 40, "sample_length": 0, **flat_values}
    trainer.train(make_config(corpus, root / "cache", root / "run", **values))
    return str(root / "run")


def script_command(name, *args):
    """The command line of scripts/`name` with `args`, in this Python."""
    return [sys.executable, os.path.join(REPO_ROOT, "scripts", name), *args]


def smoke_args(train_dir, *flags):
    """scripts/train.py's arguments for configs/smoke.cfg into `train_dir`, then `flags`."""
    return [f"--flagfile={SMOKE_CONFIG}", f"--train_dir={train_dir}", *flags]


def smoke_train_command(train_dir, corpus, *flags):
    """The command line of scripts/train.py with configs/smoke.cfg on `corpus`, then `flags`."""
    return script_command("train.py", *smoke_args(train_dir, f"--data_path={corpus}", *flags))


def script_env(cache, **extra):
    """The environment of a script under test: this one, with the corpus cache `cache`, TensorFlow's C++
    logging quiet, no TF_CONFIG (a test that wants one sets it), then `extra`. The cache gets this
    process's build of the fused kernels, so that scripts do not compile them again (tests of the
    build itself use their own environment)."""
    seed_kernels(cache)
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    return {**env, "TF_CHARRNN_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def snapshot(root):
    """{relative path: sha256 (a file) or "folder"} of everything below `root`, the cache folders
    included: equal snapshots mean nothing was written, created or removed."""
    digests = {}
    for folder, folders, names in os.walk(root):
        for name in folders:
            digests[os.path.relpath(os.path.join(folder, name), root)] = "folder"
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def seed_kernels(cache):
    """Copies this process's fused-kernel library (if built and good) and its record into the cache
    folder `cache`."""
    from tf_charrnn import cache as cache_lib
    from tf_charrnn.model import native

    built, target = native.library_path(), native.library_path(str(cache))
    if cache_lib.problem(built) is None and not os.path.isfile(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        for source, copy in ((built, target), (cache_lib.record_path(built), cache_lib.record_path(target))):
            shutil.copy(source, copy)


def run_command(command, env=None, timeout=600, **kwargs):
    """Runs `command` to its end with `env` (None: this process's); the CompletedProcess, its stdout and
    stderr as text."""
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


def start_command(command, env):
    """Starts `command` with `env`, its stdout discarded; returns (the process, a queue.Queue of its stderr
    lines, which a thread fills as they come)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
    return process, lines


def pythonpath_without_tensorflow(folder):
    """A PYTHONPATH (a fake package made in `folder`, then the repository) under which importing
    TensorFlow fails: a process that still gives its expected refusal made it before TensorFlow loads."""
    fake = folder / "no_tensorflow" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('TensorFlow was imported')\n", encoding="utf-8")
    return os.pathsep.join([str(fake.parent), REPO_ROOT])


def run_script(name, args, cache, timeout=600, **kwargs):
    """Runs scripts/`name` with `args` and the corpus cache `cache` (see `script_env`) to its end."""
    return run_command(script_command(name, *args), script_env(cache), timeout, **kwargs)


def tensorboard_events(log_dir):
    """A TensorBoard log folder (e.g. a run's logs/val), loaded with tensorboard's own reader, every
    event kept: an EventAccumulator (`.Tensors(tag)` holds each tag's events)."""
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(log_dir, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return accumulator


def read_scalars(log_dir):
    """The scalar summaries of a TensorBoard log folder: {tag: [(step, value), ...]} in the order they
    were written (no text samples, no hyperparameters)."""
    from tensorboard.util import tensor_util

    accumulator = tensorboard_events(log_dir)
    return {
        tag: [
            (event.step, float(tensor_util.make_ndarray(event.tensor_proto)))
            for event in accumulator.Tensors(tag)
        ]
        for tag in accumulator.Tags()["tensors"]
        if accumulator.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
    }


def scalar_values(log_dir):
    """{tag: [values]} of a TensorBoard log folder's scalar summaries, in the order they were written."""
    return {tag: [value for _, value in events] for tag, events in read_scalars(log_dir).items()}


def step_losses(train_dir):
    """The last logged training loss of every step, read back from the run's TensorBoard events."""
    losses = dict(read_scalars(os.path.join(train_dir, "logs", "train"))["loss"])
    return [losses[step] for step in sorted(losses)]


def assert_models_agree(got_model, want_model, ids, calls=2):
    """Calls two stateful Char-RNN models on the same ids `calls` times in a row (each call starts from
    the state the last one left) and checks their logits and weight gradients agree to 1e-5. Traced,
    so the time length is static, as in training."""
    import numpy as np
    import tensorflow as tf

    @tf.function
    def logits_and_gradients(model):
        with tf.GradientTape() as tape:
            logits = model(ids)
            loss = tf.reduce_mean(logits**2)
        return logits, tape.gradient(loss, model.trainable_variables)

    for _ in range(calls):
        got_logits, got_grads = logits_and_gradients(got_model)
        want_logits, want_grads = logits_and_gradients(want_model)
        np.testing.assert_allclose(got_logits, want_logits, rtol=0, atol=1e-5)
        for got, want in zip(got_grads, want_grads, strict=True):
            np.testing.assert_allclose(
                tf.convert_to_tensor(got), tf.convert_to_tensor(want), rtol=0, atol=1e-5
            )


KERNEL_GRADIENT_NAMES = ["h", "c", "dinputs", "dh0", "dc0", "dkernel", "drecurrent_kernel", "dbias"]


def lstm_sequence_results(batch_size, time, units, seed):
    """One LSTM layer's sequence on the fused kernels, in bfloat16 and in float32, from the same random
    inputs (5 features), initial state, weights and upstream gradients (every step's h and c carry one):
    {"bfloat16": [...], "float32": [...]}, each h, c and the gradients named KERNEL_GRADIENT_NAMES[2:]."""
    import numpy as np
    import tensorflow as tf

    from tf_charrnn.model import fused_lstm, native

    kernels = native.load()
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=1.0):
        return tf.constant(rng.normal(0.0, scale, shape), tf.float32)

    inputs, h0, c0 = normal(batch_size, time, 5), normal(batch_size, units), normal(batch_size, units)
    weights = [normal(5, 4 * units, scale=0.3), normal(units, 4 * units, scale=0.1), normal(4 * units)]
    upstream_h, upstream_c = normal(batch_size, time, units), normal(batch_size, time, units)

    def run(sequence, dtype):
        with tf.GradientTape() as tape:
            arguments = [inputs, h0, c0, *weights]
            tape.watch(arguments)
            h, c = sequence(kernels, tf.cast(inputs, dtype), h0, c0, *weights)
            loss = tf.reduce_sum(tf.cast(h, tf.float32) * upstream_h) + tf.reduce_sum(c * upstream_c)
        return [h, c, *tape.gradient(loss, arguments)]

    return {
        "bfloat16": run(fused_lstm.lstm_sequence_bfloat16, tf.bfloat16),
        "float32": run(fused_lstm.lstm_sequence, tf.float32),
    }


# A one-layer LSTM whose weights are set by hand (`hand_model`): cell 0 is 1 inside a quotation and 0
# outside, cell 1 counts the position in the line, gates saturated by construction.
UNITS = 4
QUOTE_CELL, LINE_CELL = 0, 1
STEP = 0.005  # cell 1's c grows by this per character of a line
BIG = 40.0  # a pre-activation this large saturates a sigmoid to within 1e-17


def hand_text(lines=200, seed=0):
    """Lines of words, some inside quotations, some in parentheses."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = ["the", "king", "said", "no", "more", "of", "that", "lord", "we", "go"]
    out = []
    for _ in range(lines):
        line = " ".join(rng.choice(words, rng.integers(2, 12)))
        if rng.random() < 0.5:
            cut = rng.integers(0, len(line))
            end = rng.integers(cut, len(line) + 1)
            line = line[:cut] + '"' + line[cut:end] + '"' + line[end:]
        if rng.random() < 0.3:
            line = "(" + line + ")"
        out.append(line)
    return "\n".join(out) + "\n"


def hand_model(vocab, batch_size=1, **kwargs):
    """The hand-set LSTM over `vocab` (which must hold '"' and a line break), embedding [is '"', is
    '\\n'], logits zero.

    Cell 0: forget gate 1, input gate 1 only on '"', candidate tanh(BIG (0.38 - h')): from c' = 0
    (h' = 0) it adds 1, from c' = 1 (h' = tanh 1 = 0.76) it takes 1 away: c is 1 inside a quotation.
    Cell 1: input gate 1, forget gate 0 only on a line break, candidate STEP: c = STEP (position + 1).
    Output gates 1. The input and forget gates of cell 0 and the output gates are saturated on every
    character (right-saturated: 1.0 of the characters), cell 0's input gate on every '"' only.
    """
    from tf_charrnn.config import ModelConfig
    from tf_charrnn.model.char_rnn import CharRNN

    config = dataclasses.replace(
        ModelConfig(),
        vocab_size=len(vocab),
        embedding_dim=2,
        rnn_units=UNITS,
        num_layers=1,
        cell="lstm",
        dropout=0.0,
    )
    model = CharRNN(config, batch_size=batch_size, **kwargs)
    import numpy as np

    embedding = np.zeros([len(vocab), 2], np.float32)
    embedding[vocab.chars.index('"'), 0] = 1
    embedding[vocab.chars.index("\n"), 1] = 1
    h = UNITS
    kernel = np.zeros([2, 4 * h], np.float32)
    recurrent = np.zeros([h, 4 * h], np.float32)
    bias = np.zeros([4 * h], np.float32)
    i, f, g, o = (slice(k * h, (k + 1) * h) for k in range(4))
    # cell 0: quotation
    kernel[0, i.start + QUOTE_CELL] = 2 * BIG
    bias[i.start + QUOTE_CELL] = -BIG
    bias[f.start + QUOTE_CELL] = BIG
    recurrent[QUOTE_CELL, g.start + QUOTE_CELL] = -BIG
    bias[g.start + QUOTE_CELL] = 0.38 * BIG
    # cell 1: position in the line
    bias[i.start + LINE_CELL] = BIG
    bias[f.start + LINE_CELL] = BIG
    kernel[1, f.start + LINE_CELL] = -2 * BIG
    bias[g.start + LINE_CELL] = np.arctanh(STEP)
    bias[o] = BIG
    layer = model.recurrent_layers[0]
    model.embedding.embeddings.assign(embedding)
    layer.cell.kernel.assign(kernel)
    layer.cell.recurrent_kernel.assign(recurrent)
    layer.cell.bias.assign(bias)
    model.head.kernel.assign(np.zeros(model.head.kernel.shape, np.float32))
    return model
