"""The fused C++ LSTM kernels: they build here, match Keras and TensorFlow ops, and fall back cleanly."""

import dataclasses
import glob
import os
import re
import shutil
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import KERNEL_GRADIENT_NAMES, QUOTE, assert_models_agree, lstm_sequence_results, run_command
from tf_charrnn.config import ModelConfig, RunConfig
from tf_charrnn.data import pipeline
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.errors import UserError
from tf_charrnn.inference import sampling
from tf_charrnn.inference.sampling import Decoding
from tf_charrnn.model import fused_lstm, native
from tf_charrnn.model.char_rnn import CharRNN
from tf_charrnn.runtime import placement
from tf_charrnn.training.train_step import TrainStep

needs_kernels = pytest.mark.skipif(native.load() is None, reason="the fused kernels cannot be built here")
needs_bfloat16_kernels = pytest.mark.skipif(
    not native.bfloat16_kernels(), reason="no bfloat16 fused kernels here (no AVX512-BF16)"
)
needs_int8_step = pytest.mark.skipif(
    not native.int8_ops(), reason="no int8 step kernel here (no AVX512-VNNI)"
)


def test_kernels_build_wherever_there_is_a_compiler():
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("no C++ compiler on this machine")
    assert native.load() is not None
    assert os.path.isfile(native.library_path())


def _layers(units, batch_size, seed=0):
    """A FusedLSTM asked to use the kernels and a keras.layers.LSTM, both stateful, with the same random
    weights."""
    options = dict(return_sequences=True, return_state=True, stateful=True)
    layers = [fused_lstm.FusedLSTM(units, use_kernels=True, **options), keras.layers.LSTM(units, **options)]
    for layer in layers:
        layer.build((batch_size, None, 5))
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0.0, 0.3, w.shape).astype(np.float32) for w in layers[1].get_weights()]
    for layer in layers:
        layer.set_weights(weights)
    return layers


@needs_kernels
@pytest.mark.parametrize(
    "batch_size, time, units",
    # 48, 100 and 300 units run padded to 64, 128 and 320 (fused_lstm.pad_units); steps under 16 MFLOP
    # run their batch rows in two shards per thread (50 rows: 12 + 12 + 12 + 14), as do larger steps on
    # up to 2 MB of weights (256 units at batch 48); 512 units at batch 64 (4 MB) split each step's blocks
    [
        (7, 5, 64),
        (3, 1, 128),
        (13, 24, 64),
        (1, 4, 512),
        (64, 3, 128),
        (50, 6, 128),
        (48, 3, 256),
        (64, 2, 512),
        (5, 6, 48),
        (9, 7, 100),
        (4, 3, 300),
    ],
)
def test_fused_layer_matches_keras_lstm_in_outputs_states_and_gradients(batch_size, time, units, monkeypatch):
    monkeypatch.setattr(fused_lstm, "PADDED_FLOAT32_MIN_UNITS", 0)  # pad at small sizes too, to test it
    fused, reference = _layers(units, batch_size)
    assert fused._kernels(None) is not None
    rng = np.random.default_rng(1)
    upstream = tf.constant(rng.normal(size=(batch_size, time, units)), tf.float32)
    upstream_c = tf.constant(rng.normal(size=(batch_size, units)), tf.float32)
    # float32 sums over H terms in another order than Keras': up to 1.2e-5 apart at H = 512
    atol = 1e-5 * max(1, units // 128)

    @tf.function
    def run(layer, inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs, h, c = layer(inputs)
            # Every output carries gradient: the sequence, and the final cell state.
            loss = tf.reduce_sum(outputs * upstream) + tf.reduce_sum(c * upstream_c)
        return outputs, h, c, tape.gradient(loss, [inputs, *layer.trainable_variables])

    for call in range(2):  # the second call starts from the state the first left in the layer
        inputs = tf.constant(rng.normal(size=(batch_size, time, 5)), tf.float32)
        got, want = run(fused, inputs), run(reference, inputs)
        for name, g, w in zip(["outputs", "h", "c"], got[:3], want[:3], strict=True):
            np.testing.assert_allclose(g, w, rtol=0, atol=atol, err_msg=f"call {call}: {name}")
        for name, g, w in zip(["inputs", "kernel", "recurrent_kernel", "bias"], got[3], want[3], strict=True):
            scale = max(1.0, float(np.abs(w).max()))
            np.testing.assert_allclose(
                g / scale, w / scale, rtol=0, atol=atol, err_msg=f"call {call}: d{name}"
            )
    for g, w in zip(fused.states, reference.states, strict=True):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=0, atol=atol)


@needs_kernels
def test_model_on_kernels_matches_the_keras_model_and_shares_its_weights():
    config = ModelConfig(vocab_size=11, embedding_dim=6, rnn_units=64, num_layers=2, dropout=0.0)
    fused = CharRNN(config, batch_size=4, seed=1, fused_kernels=True)
    plain = CharRNN(config, batch_size=4, seed=1, fused_kernels=False)
    assert [v.path for v in fused.weights] == [v.path for v in plain.weights]
    plain.copy_weights_from(fused)
    ids = tf.constant(np.random.default_rng(0).integers(0, 11, (4, 20)), tf.int32)

    assert_models_agree(fused, plain, ids)


@needs_kernels
def test_kernels_are_used_only_where_they_apply():
    def kernels_for(units=64, use_kernels=True, **kwargs):
        layer = fused_lstm.FusedLSTM(units, use_kernels=use_kernels, return_sequences=True, **kwargs)
        layer.build((2, None, 3))
        return layer._kernels(None)

    assert kernels_for() is not None
    assert kernels_for(units=48) is None  # float32 padded to 64 was slower than Keras' ops
    assert kernels_for(units=300) is not None  # padded to 320: faster
    assert (kernels_for(units=48, dtype="mixed_bfloat16") is not None) == native.bfloat16_kernels()
    assert kernels_for(use_kernels=False) is None
    assert kernels_for(dtype="mixed_bfloat16") is not None  # bfloat16 kernels, else float32 ones
    assert kernels_for(dtype="mixed_float16") is None
    assert kernels_for(recurrent_dropout=0.1) is None
    assert kernels_for(activation="relu") is None


def _relative_error(got, want):
    """max |got - want| over max |want|, in float32."""
    got, want = (np.asarray(tf.cast(x, tf.float32)) for x in (got, want))
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


@needs_bfloat16_kernels
@pytest.mark.parametrize(
    "batch_size, time, units",
    # 512 units at batch 48 run in row shards (2 MB of bfloat16 weights), at batch 8 split each step's blocks
    [
        (7, 5, 64),
        (13, 24, 128),
        (1, 4, 512),
        (64, 3, 64),
        (50, 5, 128),
        (6, 5, 100),
        (48, 3, 512),
        (8, 2, 512),
    ],
)
def test_bfloat16_kernels_match_the_float32_kernels_to_bfloat16_precision(batch_size, time, units):
    results = lstm_sequence_results(batch_size, time, units, seed=6)
    got, want = results["bfloat16"], results["float32"]
    assert got[0].dtype == tf.bfloat16 and got[1].dtype == tf.float32
    for name, g, w in zip(KERNEL_GRADIENT_NAMES, got, want, strict=True):
        assert _relative_error(g, w) < 2e-2, f"{name}: {_relative_error(g, w)}"


# One process per TF_CHARRNN_AMX setting (the choice is made once per process): the bfloat16 kernels'
# h, c and every gradient on shapes that take each row tiling (1, 16 + 1 and 64 rows; 64 to 512 units).
_BF16_PRODUCTS_SCRIPT = textwrap.dedent(
    f"""
    import sys
    sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
    import numpy as np, tensorflow as tf
    from helpers import KERNEL_GRADIENT_NAMES, lstm_sequence_results
    from tf_charrnn.model import native

    results = {{"products": np.array(native.bf16_products())}}
    for batch_size, time, units in [(1, 3, 64), (17, 4, 128), (64, 2, 512)]:
        for dtype, values in lstm_sequence_results(batch_size, time, units, seed=units).items():
            for name, value in zip(KERNEL_GRADIENT_NAMES, values, strict=True):
                results[f"{{dtype}} {{batch_size}} {{units}} {{name}}"] = tf.cast(value, tf.float32).numpy()
    np.savez(sys.argv[1], **results)
    """
)


def _bf16_kernel_results(setting, tmp_path):
    """The script's results in a process with TF_CHARRNN_AMX=`setting`."""
    path = tmp_path / f"{setting}.npz"
    result = run_command(
        [sys.executable, "-c", _BF16_PRODUCTS_SCRIPT, str(path)],
        env={**os.environ, "TF_CHARRNN_AMX": setting},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(path))


@pytest.mark.slow
@needs_bfloat16_kernels
def test_amx_tile_code_matches_the_avx512_bf16_kernels_and_float32(tmp_path):
    # The AMX tile code runs through its software model here (TF_CHARRNN_AMX=emulate), and on the
    # hardware too where this CPU and OS grant AMX (the default setting then picks it).
    reference = _bf16_kernel_results("0", tmp_path)
    assert reference.pop("products") == "avx512_bf16"
    settings = ["emulate"] + (["auto"] if native.bf16_products() == "amx" else [])
    for setting in settings:
        got = _bf16_kernel_results(setting, tmp_path)
        assert got.pop("products") == {"emulate": "amx (emulated)", "auto": "amx"}[setting]
        assert got.keys() == reference.keys()
        for key in got:
            if key.startswith("float32"):  # untouched by the setting
                np.testing.assert_array_equal(got[key], reference[key], err_msg=key)
                continue
            # Against the AVX512-BF16 products: the same bfloat16 inputs, float32 sums in another order,
            # so a value rounded to bfloat16 (h, dz) may land one step (2^-7) away; measured up to 2e-3.
            # A wrong tile (row, column block, depth chunk) is off by far more.
            assert _relative_error(got[key], reference[key]) < 1e-2, f"{setting} {key}"
            # Against float32 kernels: bfloat16 precision, as the AVX512-BF16 kernels are held to.
            want = reference[key.replace("bfloat16", "float32", 1)]
            assert _relative_error(got[key], want) < 2e-2, f"{setting} {key} against float32"


@needs_kernels
@pytest.mark.parametrize("bfloat16_kernels", [True, False])
def test_bfloat16_model_on_kernels_matches_the_float32_model(bfloat16_kernels, monkeypatch):
    if bfloat16_kernels and not native.bfloat16_kernels():
        pytest.skip("no bfloat16 fused kernels here (no AVX512-BF16)")
    monkeypatch.setattr(native, "bfloat16_kernels", lambda: bfloat16_kernels)
    config = ModelConfig(vocab_size=11, embedding_dim=6, rnn_units=64, num_layers=2, dropout=0.0)
    mixed = CharRNN(config, batch_size=4, seed=1, dtype_policy="mixed_bfloat16", fused_kernels=True)
    full = CharRNN(config, batch_size=4, seed=1, fused_kernels=True)
    assert all(layer._kernels(None) is not None for layer in mixed.recurrent_layers)
    assert all(weight.dtype == "float32" for weight in mixed.weights)
    full.copy_weights_from(mixed)
    ids = tf.constant(np.random.default_rng(0).integers(0, 11, (4, 20)), tf.int32)

    @tf.function
    def logits_and_gradients(model):
        with tf.GradientTape() as tape:
            logits = model(ids, training=True)
            loss = tf.reduce_mean(logits**2)
        return logits, tape.gradient(loss, model.trainable_variables)

    for _ in range(2):  # the second call starts from the state the first left
        (got_logits, got_grads), (want_logits, want_grads) = (
            logits_and_gradients(mixed),
            logits_and_gradients(full),
        )
        assert _relative_error(got_logits, want_logits) < 2e-2
        for variable, g, w in zip(full.trainable_variables, got_grads, want_grads, strict=True):
            g, w = tf.convert_to_tensor(g), tf.convert_to_tensor(w)
            assert g.dtype == tf.float32 and _relative_error(g, w) < 3e-2, variable.path


@needs_bfloat16_kernels
def test_bfloat16_training_follows_the_float32_loss_curve():
    text = QUOTE * 40
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    losses = {}
    for mixed_precision in ["none", "bfloat16"]:
        config = RunConfig.from_flat(
            dict(
                vocab_size=len(vocab),
                embedding_dim=16,
                rnn_units=64,
                num_layers=2,
                dropout=0.0,
                batch_size=8,
                seq_length=32,
                learning_rate=0.01,
                mixed_precision=mixed_precision,
                seed=1,
            )
        )
        runtime = placement.resolve(config.replace(strategy="default"))
        assert runtime.fused_kernels
        keras.utils.set_random_seed(1)
        train_step = TrainStep(config, runtime)
        losses[mixed_precision] = [
            float(train_step.train(inputs, targets, 0.01)["loss"])
            for inputs, targets in pipeline.stream_dataset(ids, 8, 32, 10)
            for _ in range(3)  # 30 steps: each batch three times, so the loss falls far
        ]
    want, got = np.array(losses["none"]), np.array(losses["bfloat16"])
    assert want[-1] < 0.7 * want[0]  # it learned
    np.testing.assert_allclose(got, want, rtol=0.03)  # they differ by 1.5% at most here


@needs_kernels
def test_implementation_names_what_runs_the_layer(monkeypatch):
    def layer(units, dtype=None, use_kernels=True):
        return fused_lstm.FusedLSTM(units, use_kernels=use_kernels, dtype=dtype)

    assert layer(64).implementation() == fused_lstm.FUSED_FLOAT32
    assert layer(64).step_implementation() == fused_lstm.FUSED_FLOAT32
    assert layer(32).implementation() == fused_lstm.KERAS_OPS  # float32 padded to 64 was slower
    assert layer(300).implementation() == fused_lstm.FUSED_FLOAT32  # padded to 320
    assert layer(32).step_implementation() == fused_lstm.FUSED_FLOAT32  # the step takes multiples of 16
    assert layer(64, use_kernels=False).implementation() == fused_lstm.KERAS_OPS
    assert layer(64, use_kernels=False).step_implementation() == fused_lstm.KERAS_OPS
    assert layer(64, "mixed_float16").implementation() == fused_lstm.KERAS_OPS
    assert layer(64).implementation(mask=tf.ones([1, 2], tf.bool)) == fused_lstm.KERAS_OPS
    bfloat16 = fused_lstm.FUSED_BFLOAT16 if native.bfloat16_kernels() else fused_lstm.FUSED_FLOAT32
    assert layer(64, "mixed_bfloat16").implementation() == bfloat16
    monkeypatch.setattr(native, "load", lambda: None)  # kernels off or not built
    assert layer(64).implementation() == fused_lstm.KERAS_OPS
    assert layer(64).step_implementation() == fused_lstm.KERAS_OPS


def test_bfloat16_kernels_are_off_without_their_ops_or_when_turned_off(monkeypatch):
    class Float32Kernels:  # a library built where the compiler does not target AVX512-BF16
        pass

    for op in native.OPS:
        setattr(Float32Kernels, op, None)
    try:
        monkeypatch.setattr(native, "load", lambda: Float32Kernels)
        native.bfloat16_kernels.cache_clear()
        assert not native.bfloat16_kernels()
        monkeypatch.setattr(native, "load", lambda: None)
        native.bfloat16_kernels.cache_clear()
        assert not native.bfloat16_kernels()
        monkeypatch.undo()
        monkeypatch.setenv("TF_CHARRNN_BF16_KERNELS", "0")
        native.bfloat16_kernels.cache_clear()
        assert not native.bfloat16_kernels()
    finally:
        monkeypatch.undo()
        native.bfloat16_kernels.cache_clear()


@pytest.mark.parametrize(
    "setting, vendor, products, training_kernels, step_kernels",
    [
        ("auto", "AuthenticAMD", "avx512_bf16", True, True),
        ("auto", "GenuineIntel", "amx", True, True),
        ("auto", "GenuineIntel", "avx512_bf16", False, True),  # vdpbf16ps no faster than float32's FMA
        ("auto", "", "avx512_bf16", True, True),  # an OS that does not name the vendor
        ("1", "GenuineIntel", "avx512_bf16", True, True),
        ("0", "AuthenticAMD", "avx512_bf16", False, False),
        ("auto", "AuthenticAMD", None, False, False),  # a library without the bfloat16 ops
    ],
)
def test_bfloat16_kernels_where_they_pay(
    monkeypatch, setting, vendor, products, training_kernels, step_kernels
):
    monkeypatch.setenv("TF_CHARRNN_BF16_KERNELS", setting)
    monkeypatch.setattr(native, "load", lambda: object())
    monkeypatch.setattr(native, "bf16_products", lambda: products)
    monkeypatch.setattr(native, "_cpu_vendor", lambda: vendor)
    native.bfloat16_kernels.cache_clear()
    try:
        assert native.bfloat16_kernels() == training_kernels
        assert native.bfloat16_ops() == step_kernels
    finally:
        native.bfloat16_kernels.cache_clear()


def test_an_unknown_bfloat16_kernel_setting_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("TF_CHARRNN_BF16_KERNELS", "yes")
    native.bfloat16_kernels.cache_clear()
    try:
        refused = "TF_CHARRNN_BF16_KERNELS='yes' is not a setting; use one of auto, 1, 0"
        with pytest.raises(UserError, match=refused):
            native.bfloat16_kernels()
        with pytest.raises(UserError, match="TF_CHARRNN_BF16_KERNELS='yes' is not a setting"):
            native.bfloat16_ops()
    finally:
        native.bfloat16_kernels.cache_clear()


def test_the_cpu_vendor_is_read_from_the_os():
    vendor = native._cpu_vendor()
    if os.path.isfile("/proc/cpuinfo"):
        assert vendor in open("/proc/cpuinfo").read() and vendor
    else:
        assert vendor == ""


def test_an_unknown_amx_setting_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("TF_CHARRNN_AMX", "on")
    with pytest.raises(UserError, match="TF_CHARRNN_AMX='on' is not a setting; use one of auto, 0, emulate"):
        native.bf16_products()


@pytest.mark.slow
@needs_bfloat16_kernels
def test_a_build_without_avx512_bf16_runs_bfloat16_on_the_float32_kernels(tmp_path):
    # A fresh process: this one has registered the ops already. -mno-avx512bf16 builds what a CPU or
    # compiler without AVX512-BF16 gets.
    script = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf
        from tf_charrnn.model import native
        from tf_charrnn.config import ModelConfig
        from tf_charrnn.model.char_rnn import CharRNN

        assert native.load() is not None and not native.bfloat16_kernels()
        assert not any(hasattr(native.load(), op) for op in native.BF16_OPS)
        config = ModelConfig(vocab_size=11, embedding_dim=6, rnn_units=64, num_layers=1, dropout=0.0)
        mixed = CharRNN(config, batch_size=3, dtype_policy="mixed_bfloat16", fused_kernels=True)
        full = CharRNN(config, batch_size=3, fused_kernels=True)
        full.copy_weights_from(mixed)
        ids = tf.constant(np.random.default_rng(0).integers(0, 11, (3, 9)), tf.int32)
        got, want = mixed(ids).numpy(), full(ids).numpy()
        assert np.abs(got - want).max() < 2e-2 * np.abs(want).max(), np.abs(got - want).max()
        print("ok")
        """
    )
    env = {**os.environ, "TF_CHARRNN_CACHE": str(tmp_path), "CXX": "g++ -mno-avx512bf16"}
    result = run_command([sys.executable, "-c", script], env=env)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


@pytest.mark.slow
@needs_kernels
def test_a_build_without_avx512_runs_the_float32_kernels_as_keras_does(tmp_path):
    # CPUs with AVX2 and no AVX-512 (Zen 3, Intel before Skylake-X) make the kernels' register tiles in
    # 256-bit halves (lstm.h, MultiplyTile). -mno-avx512f builds that code on any x86-64 CPU; the sequence
    # kernels (tiles of 1 to 6 rows, forward and gradient) and the step kernel are checked on it in a fresh
    # process, by this file's own tests.
    if not native._compiler_accepts("-mno-avx512f"):
        pytest.skip("the C++ compiler has no -mno-avx512f (not x86-64): only -march=native is built")
    env = {**os.environ, "TF_CHARRNN_CACHE": str(tmp_path), "CXX": "g++ -mno-avx512f"}
    tests = "matches_keras_lstm_in_outputs or step_kernel_matches_the_tensorflow_step or sampler_on_the_step"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", tests]
    result = run_command(command, env=env, cwd=os.path.dirname(__file__))
    assert result.returncode == 0, result.stdout[-3000:]
    summary = result.stdout.strip().splitlines()[-1]  # e.g. "19 passed, 55 deselected in 39.50s"
    assert int(re.match(r"(\d+) passed", summary).group(1)) >= 19 and "skipped" not in summary, summary
    (library,) = glob.glob(str(tmp_path / "native" / "*.so"))
    disassembly = run_command(["objdump", "-d", library]).stdout
    assert "%ymm" in disassembly and "%zmm" not in disassembly


def test_layer_without_kernels_is_keras_lstm(monkeypatch):
    monkeypatch.setattr(native, "load", lambda: None)
    fused, reference = _layers(64, batch_size=3)
    inputs = tf.constant(np.random.default_rng(2).normal(size=(3, 4, 5)), tf.float32)
    for got, want in zip(fused(inputs), reference(inputs), strict=True):
        np.testing.assert_array_equal(got, want)


def test_failed_build_raises_a_clear_error_and_leaves_no_file(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "false")
    with pytest.raises(native.NativeBuildError, match="compiling the fused kernels failed"):
        native.build_and_load(cache=str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(native.NativeBuildError, match="no C\\+\\+ compiler"):
        native.build_and_load(cache=str(tmp_path))
    assert os.listdir(tmp_path / "native") == []


# A stand-in compiler: each compile (-c) records its source and waits until as many compiles as the build
# runs at once have started (so a build that ran them one at a time would time out); the link records
# its object files.
RECORDING_COMPILER = """
import glob, os, sys, time
arguments, log = sys.argv[1:], os.environ["COMPILER_LOG"]
output = arguments[arguments.index("-o") + 1]
if "-c" in arguments:
    source = arguments[arguments.index("-c") + 1]
    open(f"{log}.started.{os.path.basename(source)}", "w").close()
    deadline = time.monotonic() + float(os.environ["COMPILER_WAIT"])
    while len(glob.glob(log + ".started.*")) < int(os.environ["COMPILER_AT_ONCE"]):
        if time.monotonic() > deadline:
            sys.exit("compiled alone")
        time.sleep(0.01)
    with open(output, "w") as f:
        f.write(source)
else:
    objects = [argument for argument in arguments if argument.endswith(".o")]
    with open(log, "w") as f:
        f.write("\\n".join(open(path).read() for path in objects))
    open(output, "wb").close()
"""


def test_the_build_compiles_its_sources_side_by_side_and_links_them_in_order(monkeypatch, tmp_path):
    compiler = tmp_path / "compiler.py"
    compiler.write_text(RECORDING_COMPILER)
    log = tmp_path / "compiler.log"
    monkeypatch.setenv("CXX", f"{sys.executable} {compiler}")
    monkeypatch.setenv("COMPILER_LOG", str(log))
    monkeypatch.setenv("COMPILER_AT_ONCE", "2")
    monkeypatch.setenv("COMPILER_WAIT", "60")
    monkeypatch.setattr(native, "_build_jobs", lambda: 2)
    library = tmp_path / "native" / "kernels.so"
    native.build(str(library))
    assert log.read_text().splitlines() == native.SOURCES  # every source, linked in order
    assert sorted(os.listdir(library.parent)) == ["kernels.so", "kernels.so.record.json"]  # no objects left

    # Where a process may run on one CPU only, one compile at a time: the stand-in waits for a second and
    # fails, and the build says so and leaves nothing.
    for started in tmp_path.glob("compiler.log.started.*"):
        started.unlink()
    monkeypatch.setattr(native, "_build_jobs", lambda: 1)
    monkeypatch.setenv("COMPILER_WAIT", "2")
    with pytest.raises(native.NativeBuildError, match="compiled alone"):
        native.build(str(tmp_path / "alone" / "kernels.so"))
    assert os.listdir(tmp_path / "alone") == []


@needs_kernels
@pytest.mark.parametrize(
    "xw_shape, h0_shape, kernel_shape, message",
    [
        ((2, 3, 192), (2, 48), (48, 192), "multiple of 64"),
        ((2, 3, 256), (2, 64), (64, 128), r"recurrent_kernel must be \[units, 4 \* units\]"),
        ((2, 3, 256), (3, 64), (64, 256), "h0 must be"),
        ((2, 0, 256), (2, 64), (64, 256), "time > 0"),
    ],
)
def test_kernel_rejects_inconsistent_shapes(xw_shape, h0_shape, kernel_shape, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        native.load().char_rnn_lstm_sequence(
            tf.zeros(xw_shape),
            tf.zeros(h0_shape),
            tf.zeros(h0_shape),
            tf.zeros(kernel_shape),
            tf.zeros([256]),
        )


def _step_models(units, num_layers=2, skip_connections=False):
    """Two models with the same weights: one steps its LSTMs on the fused kernel, one on TensorFlow ops."""
    config = ModelConfig(
        vocab_size=9,
        embedding_dim=5,
        rnn_units=units,
        num_layers=num_layers,
        dropout=0.0,
        skip_connections=skip_connections,
    )
    fused = CharRNN(config, batch_size=1, seed=3, fused_kernels=True)
    plain = CharRNN(config, batch_size=1, seed=3, fused_kernels=False)
    plain.copy_weights_from(fused)
    return fused, plain


@needs_kernels
# 64 x 512: a step of more than 16 MFLOP, split across the intra-op threads
# (3 layers, skip connections): the logits read every layer's h, in layer order
# 24 and 100 units: padded to 32 and 112 with units that stay zero (fused_lstm.pad_units)
@pytest.mark.parametrize(
    "batch_size, units, num_layers, skip_connections",
    [
        (1, 32, 2, False),
        (5, 16, 2, False),
        (7, 64, 2, False),
        (64, 512, 2, False),
        (3, 32, 3, True),
        (1, 24, 2, False),
        (5, 100, 3, True),
    ],
)
def test_step_kernel_matches_the_tensorflow_step(batch_size, units, num_layers, skip_connections):
    fused, plain = _step_models(units, num_layers, skip_connections)
    assert "packed" in fused.step_weights() and "layers" not in fused.step_weights()
    assert "packed" not in plain.step_weights()
    rng = np.random.default_rng(4)
    ids = tf.constant(rng.integers(0, 9, batch_size), tf.int32)
    states = tf.constant(rng.normal(size=(num_layers, 2, batch_size, units)), tf.float32)
    for _ in range(3):  # chained: each step starts from the last one's states
        (got_logits, got_states), (want_logits, want_states) = (
            fused.step(ids, states),
            plain.step(ids, states),
        )
        np.testing.assert_allclose(got_logits, want_logits, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got_states, want_states, rtol=0, atol=1e-5)
        states, ids = want_states, tf.argmax(want_logits, axis=-1, output_type=tf.int32)


@needs_kernels
@pytest.mark.parametrize("units", [32, 24])  # 24: padded to 32
def test_sampler_on_the_step_kernel_writes_the_text_of_tensorflow_ops(units):
    config = ModelConfig(vocab_size=9, embedding_dim=5, rnn_units=units, num_layers=2, dropout=0.0)
    fused, plain = sampling.Sampler(config, fused_kernels=True), sampling.Sampler(config, fused_kernels=False)
    rng = np.random.default_rng(5)
    plain.model.set_weights([rng.normal(0.0, 0.5, w.shape) for w in plain.model.get_weights()])
    fused.model.copy_weights_from(plain.model)
    assert "packed" in fused.model.step_weights()
    vocab = Vocab("abcdefgh\n")
    for mode in ["greedy", "sample"]:
        decoding = Decoding(mode, seed=7)
        want = plain.generate(vocab, "ab", 200, decoding, num_samples=2)
        assert fused.generate(vocab, "ab", 200, decoding, num_samples=2) == want
        steps = list(fused.stream(vocab, "ab", 200, decoding, num_samples=2))
        streamed = ["".join(chars) for chars in zip(*steps, strict=True)]
        assert streamed == want


def test_step_kernel_is_skipped_where_it_does_not_apply():
    config = ModelConfig(vocab_size=9, embedding_dim=5, rnn_units=32, num_layers=1, dropout=0.0, cell="gru")
    gru = CharRNN(config, batch_size=1, fused_kernels=True)
    assert gru.step_implementation("bfloat16") == fused_lstm.KERAS_OPS
    assert gru.step_weights()["layers"][0] is None  # GRU cells read their own
    wide = CharRNN(dataclasses.replace(config, cell="lstm", rnn_units=200), batch_size=1, fused_kernels=True)
    assert wide.step_implementation() == fused_lstm.KERAS_OPS  # not 16k, above PADDED_STEP_MAX_UNITS
    assert "packed" not in wide.step_weights()


@needs_kernels
def test_step_kernel_pads_units_that_are_not_a_multiple_of_16_and_the_state_keeps_the_real_units():
    """24 units step as 32: each layer's packed weights and the head have 8 more units' (or inputs') zero
    rows, the state given and returned keeps 24 (the step kernel's arithmetic: the matching tests)."""
    config = ModelConfig(vocab_size=9, embedding_dim=5, rnn_units=24, num_layers=2, dropout=0.0)
    model = CharRNN(config, batch_size=1, fused_kernels=True)
    assert model.recurrent_layers[0].step_padding() == 8
    weights = model.step_weights()
    assert [packed.shape for packed in weights["packed"]] == [(2, 5 + 32, 64), (2, 32 + 32, 64)]
    assert weights["head_kernel"].shape == (32, 9) and not np.any(weights["head_kernel"][24:])
    assert all(bias.shape == (128,) for bias in weights["bias"])
    logits, state = model.step(tf.constant([1, 2]), model.initial_state(2), weights)
    assert logits.shape == (2, 9) and state.shape == (2, 2, 2, 24)


@needs_kernels
def test_a_loop_pads_the_state_once_and_steps_as_a_step_that_pads_it_each_time():
    """`loop_state` pads the state for the padded step kernel once; `step` then keeps it padded (the
    padded units stay zero) and gives what it gives on the real units' state, bit for bit."""
    config = ModelConfig(vocab_size=9, embedding_dim=5, rnn_units=24, num_layers=2, dropout=0.0)
    model = CharRNN(config, batch_size=1, fused_kernels=True)
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0.0, 0.5, w.shape) for w in model.get_weights()])
    weights = model.step_weights()
    state = model.initial_state(2)
    padded = model.loop_state(state, weights)
    assert padded.shape == (2, 2, 2, 32)
    for ids in ([1, 2], [3, 4], [5, 0]):
        logits, state = model.step(tf.constant(ids), state, weights)
        padded_logits, padded = model.step(tf.constant(ids), padded, weights)
        assert padded.shape == (2, 2, 2, 32) and not np.any(padded[..., 24:])
        np.testing.assert_array_equal(padded_logits, logits)
        np.testing.assert_array_equal(model.caller_state(padded), state)
    # Where nothing is padded the state is left as it is.
    wide = CharRNN(dataclasses.replace(config, rnn_units=200), batch_size=1, fused_kernels=True)
    zero = wide.initial_state(1)
    assert wide.loop_state(zero, wide.step_weights()) is zero and wide.caller_state(zero) is zero


@needs_kernels
def test_step_kernel_rejects_inconsistent_shapes_and_ids():
    def step(ids=(0,), units=16, packed_shape=(1, 21, 64), bias=64, head_rows=None):
        return native.load().char_rnn_model_step(
            tf.constant(ids, tf.int32),
            tf.zeros([1, 2, 1, units]),
            tf.zeros([3, 5]),
            [tf.zeros(packed_shape)],
            [tf.zeros(bias)],
            tf.zeros([head_rows or units, 3]),
            tf.zeros(3),
        )

    logits, state = step()
    assert logits.shape == (1, 3) and state.shape == (1, 2, 1, 16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="layer 0's packed weights must be"):
        step(packed_shape=(1, 20, 60))
    with pytest.raises(tf.errors.InvalidArgumentError, match="units], units a positive multiple of 16"):
        step(units=8, packed_shape=(1, 13, 64), bias=32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="id 3 is outside the embedding's 3 rows"):
        step(ids=(3,))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"head_kernel must be \[16 or 16 \(every layer"):
        step(head_rows=32)


def _check_rounded_step(
    precision, products, batch_size, units, embedding_dim, skip_connections, zero_h_row=False
):
    """Steps a 2-layer model with random weights on `precision` step weights and checks it against the numpy
    step whose layer products are `products(x, h, kernel, recurrent_kernel)` (bias, gates and logits in
    float64), and that the rounding shows (it is not the float32 step)."""
    config = ModelConfig(
        vocab_size=9,
        embedding_dim=embedding_dim,
        rnn_units=units,
        num_layers=2,
        dropout=0.0,
        skip_connections=skip_connections,
    )
    model = CharRNN(config, batch_size=1, seed=3, fused_kernels=True)
    rng = np.random.default_rng(6)
    model.set_weights([rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    implementation, packed_dtype = {
        "bfloat16": (fused_lstm.FUSED_BFLOAT16, tf.bfloat16),
        "int8": (fused_lstm.FUSED_INT8, tf.uint8),
    }[precision]
    assert model.step_implementation(precision) == implementation
    weights = model.step_weights(precision)
    assert all(packed.dtype == packed_dtype for packed in weights["packed"])

    def sigmoid(x):
        return 1.0 / (1.0 + np.exp(-x))

    ids = rng.integers(0, 9, batch_size)
    states = rng.normal(size=(2, 2, batch_size, units)).astype(np.float32)
    if zero_h_row:
        states[0, 0, 0] = 0.0
    got_logits, got_states = model.step(tf.constant(ids, tf.int32), tf.constant(states), weights)
    x = model.embedding.embeddings.numpy()[ids]
    want_states = []
    for index, layer in enumerate(model.recurrent_layers):
        kernel, recurrent_kernel, bias = (w.numpy() for w in layer.cell.weights)
        z = products(x, states[index, 0], kernel, recurrent_kernel) + bias
        i, f, candidate, o = np.split(z, 4, axis=-1)
        c = sigmoid(f) * states[index, 1] + sigmoid(i) * np.tanh(candidate)
        x = sigmoid(o) * np.tanh(c)
        want_states.append([x, c])
    read = np.concatenate([h for h, _ in want_states], axis=-1) if skip_connections else x
    want_logits = read @ model.head.kernel.numpy() + model.head.bias.numpy()
    np.testing.assert_allclose(got_states, np.array(want_states), rtol=0, atol=2e-5)
    np.testing.assert_allclose(got_logits, want_logits, rtol=0, atol=1e-4)
    float32_logits, _ = model.step(tf.constant(ids, tf.int32), tf.constant(states), model.step_weights())
    assert np.abs(float32_logits - got_logits).max() > 1e-3  # the rounding shows: it is not the float32 step


@needs_bfloat16_kernels
@pytest.mark.parametrize(
    "batch_size, units, embedding_dim, skip_connections",
    [(1, 32, 5, False), (7, 16, 8, True), (64, 512, 64, False), (3, 24, 5, True)],
)
def test_bfloat16_step_is_the_step_on_weights_and_inputs_rounded_to_bfloat16(
    batch_size, units, embedding_dim, skip_connections
):
    """Layer by layer: z = bf16(x) bf16(W) + bf16(h) bf16(U) + b in float32, the gates and logits in float32
    (an odd embedding_dim + units exercises the zero pair that pads the bfloat16 rows; with skip
    connections the logits read both layers' h; 24 units step padded to 32)."""

    def rounded(x):
        return tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy().astype(np.float64)

    def products(x, h, kernel, recurrent_kernel):
        return rounded(x) @ rounded(kernel) + rounded(h) @ rounded(recurrent_kernel)

    _check_rounded_step("bfloat16", products, batch_size, units, embedding_dim, skip_connections)


@needs_bfloat16_kernels
def test_sampler_with_bfloat16_step_weights_streams_the_text_it_generates():
    config = ModelConfig(vocab_size=9, embedding_dim=5, rnn_units=32, num_layers=2, dropout=0.0)
    sampler = sampling.Sampler(config, fused_kernels=True, step_precision="bfloat16")
    rng = np.random.default_rng(5)
    sampler.model.set_weights([rng.normal(0.0, 0.5, w.shape) for w in sampler.model.get_weights()])
    assert sampler.model.step_implementation("bfloat16") == fused_lstm.FUSED_BFLOAT16
    vocab = Vocab("abcdefgh\n")
    decoding = Decoding("sample", seed=7)
    want = sampler.generate(vocab, "ab", 200, decoding, num_samples=2)
    steps = list(sampler.stream(vocab, "ab", 200, decoding, num_samples=2))
    assert ["".join(chars) for chars in zip(*steps, strict=True)] == want
    float32 = sampling.Sampler(config, fused_kernels=True)
    float32.model.copy_weights_from(sampler.model)
    assert float32.generate(vocab, "ab", 200, decoding, num_samples=2) != want


def test_bfloat16_step_weights_fall_back_to_float32_without_the_bfloat16_ops(monkeypatch):
    monkeypatch.setattr(native, "bfloat16_ops", lambda: False)
    layer = fused_lstm.FusedLSTM(32, use_kernels=True)
    want = fused_lstm.FUSED_FLOAT32 if native.load() is not None else fused_lstm.KERAS_OPS
    assert layer.step_implementation("bfloat16") == want


def _int8(values, axis):
    """Symmetric int8 of `values` along `axis` as the int8 step rounds them: (int values, scale)."""
    largest = np.abs(values).max(axis=axis, keepdims=True)
    scale = np.where(largest > 0, largest / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    return np.clip(np.round(values / scale), -127, 127).astype(np.int64), scale


@needs_int8_step
@pytest.mark.parametrize(
    "batch_size, units, embedding_dim, skip_connections",
    [(1, 32, 5, False), (7, 16, 8, True), (64, 512, 64, False), (3, 24, 5, True)],
)
def test_int8_step_is_the_step_on_weights_and_inputs_rounded_to_int8(
    batch_size, units, embedding_dim, skip_connections
):
    """Layer by layer: z = (sx qx qW + sh qh qU) sW + b, with [W; U] in int8 per column (scale sW) and each
    row's x and h in int8 (scales sx, sh), the integer products exact, the gates and logits in float32 (an
    embedding_dim not a multiple of 4 exercises the zero rows that pad W's quads; a row of zeros in h
    quantises with scale 1; 24 units step padded to 32, the padded columns' scale 1)."""

    def products(x, h, kernel, recurrent_kernel):
        q_weights, weight_scale = _int8(np.concatenate([kernel, recurrent_kernel]), axis=0)
        q_x, x_scale = _int8(x.astype(np.float32), axis=1)
        q_h, h_scale = _int8(h, axis=1)
        return (
            x_scale * (q_x @ q_weights[: len(kernel)]) + h_scale * (q_h @ q_weights[len(kernel) :])
        ) * weight_scale

    _check_rounded_step("int8", products, batch_size, units, embedding_dim, skip_connections, zero_h_row=True)


@needs_int8_step
def test_sampler_with_int8_step_weights_streams_the_text_it_generates():
    config = ModelConfig(vocab_size=9, embedding_dim=5, rnn_units=32, num_layers=2, dropout=0.0)
    sampler = sampling.Sampler(config, fused_kernels=True, step_precision="int8")
    rng = np.random.default_rng(5)
    sampler.model.set_weights([rng.normal(0.0, 0.5, w.shape) for w in sampler.model.get_weights()])
    assert sampler.model.step_implementation("int8") == fused_lstm.FUSED_INT8
    vocab = Vocab("abcdefgh\n")
    decoding = Decoding("sample", seed=7)
    want = sampler.generate(vocab, "ab", 200, decoding, num_samples=2)
    steps = list(sampler.stream(vocab, "ab", 200, decoding, num_samples=2))
    assert ["".join(chars) for chars in zip(*steps, strict=True)] == want
    float32 = sampling.Sampler(config, fused_kernels=True)
    float32.model.copy_weights_from(sampler.model)
    assert float32.generate(vocab, "ab", 200, decoding, num_samples=2) != want


def test_int8_step_weights_fall_back_to_float32_without_the_int8_step(monkeypatch, caplog):
    monkeypatch.setattr(native, "int8_ops", lambda: False)
    layer = fused_lstm.FusedLSTM(32, use_kernels=True)
    want = fused_lstm.FUSED_FLOAT32 if native.load() is not None else fused_lstm.KERAS_OPS
    assert layer.step_implementation("int8") == want
    config = ModelConfig(vocab_size=9, embedding_dim=5, rnn_units=32, num_layers=2, dropout=0.0)
    with caplog.at_level("INFO", logger="absl"):
        sampler = sampling.Sampler(config, fused_kernels=True, step_precision="int8")
    assert "int8 step weights need the fused kernels' int8 ops (a CPU with AVX512-VNNI)" in caplog.text
    weights = sampler.model.step_weights("int8")
    assert "scale" not in weights
    assert all(packed.dtype == tf.float32 for packed in weights.get("packed", []))


@pytest.mark.parametrize(
    "cell, units, fused_kernels, missing",
    [
        ("lstm", 200, True, "the step kernel, which takes units that are a multiple of 16 or at most 160"),
        ("gru", 32, True, "the step kernel, which runs LSTM layers only"),
        ("lstm", 32, False, "the fused kernels, off for this model (on a GPU, under XLA, or TF_CHARRNN"),
    ],
)
def test_step_weights_that_fall_back_say_what_the_step_kernel_lacks(
    caplog, cell, units, fused_kernels, missing
):
    config = ModelConfig(vocab_size=9, embedding_dim=5, rnn_units=units, num_layers=2, dropout=0.0, cell=cell)
    for precision in ("float32", "bfloat16", "int8"):
        caplog.clear()
        with caplog.at_level("INFO", logger="absl"):
            sampler = sampling.Sampler(config, fused_kernels=fused_kernels, step_precision=precision)
        assert sampler.model.step_implementation(precision) == fused_lstm.KERAS_OPS
        assert f"{precision} step weights need {missing}" in caplog.text
        assert "the step runs on keras ops in float32" in caplog.text


@needs_kernels
def test_step_weights_the_step_kernel_takes_log_no_fallback(caplog):
    config = ModelConfig(vocab_size=9, embedding_dim=5, rnn_units=32, num_layers=2, dropout=0.0)
    with caplog.at_level("INFO", logger="absl"):
        sampler = sampling.Sampler(config, fused_kernels=True, step_precision="float32")
    assert sampler.model.step_implementation("float32") == fused_lstm.FUSED_FLOAT32
    assert "step weights need" not in caplog.text


@needs_int8_step
def test_int8_step_kernel_rejects_inconsistent_shapes():
    def step(packed_shape=(1, 6, 64, 4), scale=64):
        return native.load().char_rnn_model_step_int8(
            tf.constant([0], tf.int32),
            tf.zeros([1, 2, 1, 16]),
            tf.zeros([3, 5]),
            [tf.zeros(packed_shape, tf.uint8)],
            [tf.zeros(scale)],
            [tf.zeros(64)],
            tf.zeros([16, 3]),
            tf.zeros(3),
        )

    logits, state = step()  # 5 inputs pad to 8: (8 + 16) / 4 quads of rows
    assert logits.shape == (1, 3) and state.shape == (1, 2, 1, 16)
    wrong = r"layer 0's packed weights must be \[1,6,64,4\]"
    with pytest.raises(tf.errors.InvalidArgumentError, match=wrong):
        step(packed_shape=(1, 7, 64, 4))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"layer 0's scale must be \[64\], got \[32\]"):
        step(scale=32)
