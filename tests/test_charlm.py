"""tf_charrnn.CharLM: the scripts' text and numbers from Python (generate = sample.py, score =
evaluate.py --json), stream = generate, next_chars = the softmax of the step's logits, the scripts'
runtime, and bad arguments raised as tf_charrnn.UserError naming the argument, writing nothing."""

import dataclasses
import inspect
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import tf_charrnn
from helpers import QUOTE, run_script, snapshot
from tf_charrnn.config import SampleConfig
from tf_charrnn.data.splits import load_splits
from tf_charrnn.inference import scoring
from tf_charrnn.model import fused_lstm, native
from tf_charrnn.runtime import placement

SETTINGS = dict(
    batch_size=3,
    seq_length=8,
    embedding_dim=8,
    rnn_units=24,
    num_layers=2,
    dropout=0.0,
    learning_rate=0.01,
    max_steps=20,
    eval_every=10,
    ckpt_every=10,
    sample_length=0,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run directory, corpus cache, root) of a tiny run trained with tf_charrnn.train."""
    root = tmp_path_factory.mktemp("charlm")
    corpus = root / "corpus.txt"
    corpus.write_text((QUOTE + "\nROMEO: To be, or not to be, that is the question.\n") * 6, encoding="utf-8")
    tf_charrnn.train(
        train_dir=root / "run", data_path=corpus, cache_dir=str(root / "cache"), progress=False, **SETTINGS
    )
    return str(root / "run"), str(root / "cache"), root


@pytest.fixture(scope="module")
def lm(run):
    return tf_charrnn.CharLM.from_run(run[0])


def test_from_run_loads_the_latest_checkpoint_on_the_scripts_runtime(run, lm):
    train_dir = run[0]
    assert lm.checkpoint == os.path.join(train_dir, "checkpoints", "ckpt-20")
    assert lm.config.model.rnn_units == 24 and len(lm.vocab) == lm.config.model.vocab_size
    assert isinstance(lm.model, tf.keras.Model)
    fused = placement.fused_kernels_apply()
    assert fused  # this CPU builds the kernels (CI does too), so the test checks that CharLM uses them
    assert all(layer.use_kernels for layer in lm.model.recurrent_layers)
    best = tf_charrnn.CharLM.from_run(train_dir, best=True)
    assert os.path.dirname(best.checkpoint) == os.path.join(train_dir, "checkpoints", "best")
    named = tf_charrnn.CharLM.from_run(
        train_dir, checkpoint=os.path.join(train_dir, "checkpoints", "ckpt-10")
    )
    assert named.checkpoint.endswith("ckpt-10")
    assert named.generate("Willing", 30, seed=1) != lm.generate("Willing", 30, seed=1)


def test_docstring_examples_run(run, lm):
    examples = [
        block
        for method in (tf_charrnn.CharLM, *vars(tf_charrnn.CharLM).values())
        for block in re.findall(r"```python\n(.*?)```", inspect.getdoc(method) or "", re.S)
    ]
    assert len(examples) == 10  # 8, and CharLM.activations: its own example and the class docstring's
    for example in examples:
        exec(example.replace('"runs/shakespeare_cpu"', repr(run[0])), {"tf_charrnn": tf_charrnn, "lm": lm})


def test_generate_prints_what_sample_py_prints(run, lm):
    train_dir, cache, _ = run
    options = dict(seed=7, temperature=0.8, top_k=5, top_p=0.9, num_samples=2)
    flags = [f"--{name}={value}" for name, value in options.items()]
    result = run_script(
        "sample.py", [f"--train_dir={train_dir}", "--prime=Willing", "--length=60", *flags], cache
    )
    assert result.returncode == 0, result.stderr
    texts = lm.generate("Willing", 60, **options)
    assert len(texts) == 2 and texts[0] != texts[1]
    assert result.stdout == "".join(
        f"--- sample {index} ---\n{text}\n" for index, text in enumerate(texts, 1)
    )


def test_generate_defaults_are_sample_py_defaults(lm):
    for method in (lm.generate, lm.stream):
        for name, parameter in inspect.signature(method).parameters.items():
            assert parameter.default == SampleConfig.__dataclass_fields__[name].default, name


def test_stream_joined_equals_generate(lm):
    options = dict(seed=11, temperature=0.9, top_k=4)
    pieces = list(lm.stream("Knowing", 50, **options))
    assert pieces[0] == "Knowing" and all(len(piece) == 1 for piece in pieces[1:]) and len(pieces) == 51
    assert "".join(pieces) == lm.generate("Knowing", 50, **options)
    columns = list(zip(*lm.stream("is ", 30, num_samples=3, **options), strict=True))
    assert ["".join(column) for column in columns] == lm.generate("is ", 30, num_samples=3, **options)
    assert list(lm.stream("is ", 0)) == ["is "] and lm.generate("is ", 0) == "is "


def test_stop_at_ends_each_text_at_its_first_occurrence_generated_and_streamed(lm):
    options = dict(seed=3, temperature=1.5, num_samples=4)
    full = lm.generate("Willing", 80, **options)
    cut = [text[: text.find(" ", 7) + 1] if " " in text[7:] else text for text in full]
    assert lm.generate("Willing", 80, stop_at=" ", **options) == cut
    assert any(len(text) < 87 for text in cut)  # some text stopped early
    columns = zip(*lm.stream("Willing", 80, stop_at=" ", **options), strict=True)
    assert ["".join(column) for column in columns] == cut


def test_score_of_the_validation_split_is_evaluate_py_json(run, lm):
    train_dir, cache, _ = run
    result = run_script("evaluate.py", [f"--train_dir={train_dir}", "--json"], cache)
    assert result.returncode == 0, result.stderr
    expected = json.loads(result.stdout)
    splits = load_splits(lm.config.data, lm.config.layout)
    scored = lm.score(lm.vocab.decode(splits.val_ids))
    assert scored.characters == expected["characters"] and scored.checkpoint == expected["checkpoint"]
    for key in ("nats_per_char", "bits_per_char", "perplexity"):
        assert getattr(scored, key) == pytest.approx(expected[key], abs=1e-6), key
    # Other texts, one shorter than a batch of the run's layout: the numbers of evaluate.py --data_path.
    for text, skip_unknown in (("Willing is", False), ("Willing is % enough; we must", True)):
        path = run[2] / "score.txt"
        path.write_text(text, encoding="utf-8")
        scored = lm.score(text, skip_unknown=skip_unknown)
        expected = scoring.evaluate_run(train_dir, data_path=str(path), skip_unknown=skip_unknown)
        assert dataclasses.asdict(scored) == pytest.approx(dataclasses.asdict(expected), abs=1e-6)
    assert scored.skipped_characters == 1


def test_next_chars_are_the_softmax_of_the_steps_logits(lm):
    text = "Knowing is not eno"
    state = lm.model.initial_state(1)
    for char_id in lm.vocab.encode(text):
        logits, state = lm.model.step(tf.constant([char_id]), state)
    expected = tf.nn.softmax(logits[0]).numpy()
    top = lm.next_chars(text, k=3)
    assert [char for char, _ in top] == [lm.vocab.chars[i] for i in np.argsort(-expected)[:3]]
    np.testing.assert_allclose([p for _, p in top], np.sort(expected)[::-1][:3], rtol=0, atol=1e-6)
    assert sum(p for _, p in top) <= 1.0
    everything = lm.next_chars(text, k=1000)
    assert len(everything) == len(lm.vocab) and sum(p for _, p in everything) == pytest.approx(1.0, abs=1e-5)
    assert [p for _, p in everything] == sorted((p for _, p in everything), reverse=True)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda lm: lm.generate("Willing%"), "prime= has characters outside the run's vocabulary: ['%']"),
        (lambda lm: lm.generate(""), "prime= must hold at least one character"),
        (lambda lm: lm.generate("W", length=-1), "length= must be >= 0, got -1"),
        (lambda lm: lm.generate("W", temperature=0), "temperature= must be > 0, got 0.0"),
        (lambda lm: lm.generate("W", top_k=2.5), "top_k= must be an int, got 2.5"),
        (lambda lm: lm.generate("W", sampling="beam"), "sampling= must be one of sample, greedy"),
        (lambda lm: list(lm.stream("W", num_samples=0)), "num_samples= must be an integer >= 1, got 0"),
        (lambda lm: lm.score("Willing % is"), "text= has characters outside the run's vocabulary: ['%']"),
        (lambda lm: lm.score("W"), "text= has 1 character(s) to score; at least 2 are needed"),
        (lambda lm: lm.next_chars(""), "text= must hold at least one character"),
        (lambda lm: lm.next_chars("W", k=0), "k= must be >= 1, got 0"),
    ],
)
def test_bad_arguments_raise_user_error_naming_the_argument(lm, call, message):
    with pytest.raises(tf_charrnn.UserError) as raised:
        call(lm)
    assert str(raised.value).startswith(message)
    assert "--" not in str(raised.value)


def test_from_run_of_a_folder_without_a_run_names_train_dir_and_writes_nothing(run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    before = snapshot(tmp_path), snapshot(run[2])
    with pytest.raises(
        tf_charrnn.UserError, match=r"train one with tf_charrnn\.train\(train_dir='.*empty'\)"
    ):
        tf_charrnn.CharLM.from_run(empty)
    with pytest.raises(tf_charrnn.UserError, match="checkpoint .*ckpt-99 not found"):
        tf_charrnn.CharLM.from_run(run[0], checkpoint=os.path.join(run[0], "checkpoints", "ckpt-99"))
    with pytest.raises(tf_charrnn.UserError, match="best= must be bool, got 1"):
        tf_charrnn.CharLM.from_run(run[0], best=1)
    assert (snapshot(tmp_path), snapshot(run[2])) == before


@pytest.mark.parametrize(
    "precision, implementation",
    [
        pytest.param(
            "bfloat16",
            fused_lstm.FUSED_BFLOAT16,
            marks=pytest.mark.skipif(
                not native.bfloat16_kernels(), reason="this CPU or compiler has no AVX512-BF16"
            ),
        ),
        pytest.param(
            "int8",
            fused_lstm.FUSED_INT8,
            marks=pytest.mark.skipif(not native.int8_ops(), reason="this CPU or compiler has no AVX512-VNNI"),
        ),
    ],
)
def test_reduced_precision_step_weights_generate_what_sample_py_prints_with_them(
    tmp_path, precision, implementation
):
    """A run whose units the step kernel takes (32): sample.py --step_precision=bfloat16 (or int8),
    compiled and streamed, prints what CharLM.from_run(step_precision=...) generates, and says so (at 10
    steps the weights are small and the text is the float32 step's: test_fused_lstm shows the rounding)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((QUOTE + "\n") * 6, encoding="utf-8")
    settings = {**SETTINGS, "rnn_units": 32, "max_steps": 10}
    tf_charrnn.train(
        train_dir=tmp_path / "run",
        data_path=corpus,
        cache_dir=str(tmp_path / "cache"),
        progress=False,
        **settings,
    )
    common = [
        f"--train_dir={tmp_path / 'run'}",
        "--prime=Willing",
        "--length=80",
        "--seed=4",
        f"--step_precision={precision}",
    ]
    compiled = run_script("sample.py", common, str(tmp_path / "cache"))
    streamed = run_script("sample.py", [*common, "--stream"], str(tmp_path / "cache"))
    assert compiled.returncode == 0 and streamed.returncode == 0, compiled.stderr + streamed.stderr
    lm = tf_charrnn.CharLM.from_run(tmp_path / "run", step_precision=precision)
    assert lm.model.step_implementation(precision) == implementation
    text = lm.generate("Willing", 80, seed=4)
    assert compiled.stdout == streamed.stdout == text + "\n"
    assert f"Each character steps on {implementation}" in compiled.stderr
    float32 = run_script("sample.py", common[:-1], str(tmp_path / "cache"))
    assert "Each character steps on fused kernels, float32" in float32.stderr
    with pytest.raises(
        tf_charrnn.UserError, match="step_precision= must be one of float32, bfloat16, int8, got 'float16'"
    ):
        tf_charrnn.CharLM.from_run(tmp_path / "run", step_precision="float16")
