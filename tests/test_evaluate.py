"""scripts/evaluate.py and tf_charrnn.evaluate: a checkpoint scored on the validation split reproduces
training's val loss; other texts in the stream layout (or fewer streams); unknown characters; bad input."""

import dataclasses
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from helpers import QUOTE, make_config, read_scalars, run_script, seed_kernels, snapshot
from tf_charrnn.cli.evaluate import _human_line
from tf_charrnn.errors import UserError
from tf_charrnn.inference import scored_text, scoring
from tf_charrnn.model import losses, native
from tf_charrnn.model.char_rnn import CharRNN
from tf_charrnn.run import checkpoints, layout
from tf_charrnn.runtime import placement
from tf_charrnn.training import trainer

# 3 streams of 8 characters; the corpus is 730 characters, its validation split 73: 3 batches, 72 scored.
BATCH_SIZE, SEQ_LENGTH, VAL_CHARS = 3, 8, 72
SETTINGS = dict(
    batch_size=BATCH_SIZE,
    seq_length=SEQ_LENGTH,
    embedding_dim=8,
    rnn_units=24,
    num_layers=2,
    dropout=0.0,
    learning_rate=0.01,
    sample_length=0,
)
JSON_KEYS = {"checkpoint", "characters", "nats_per_char", "bits_per_char", "perplexity", "skipped_characters"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run validated (and checkpointed) at steps 5 and 10, its TrainResult and its root folder."""
    root = tmp_path_factory.mktemp("evaluate")
    corpus = root / "corpus.txt"
    corpus.write_text((QUOTE + " ") * 10, encoding="utf-8")
    config = make_config(
        corpus, root / "cache", root / "run", **SETTINGS, max_steps=10, eval_every=5, ckpt_every=5
    )
    return str(root / "run"), trainer.train(config), root


def _reference_loss(train_dir, ids, streams, length):
    """Mean loss of `streams` contiguous streams of `length` characters, each in one call from a zero
    state: what the stream layout computes batch by batch."""
    config, _ = layout.load_run(train_dir)
    model = CharRNN(config.model, streams, fused_kernels=placement.fused_kernels_apply())
    checkpoints.restore_weights(train_dir, model)
    ids = np.asarray(ids[: streams * length + 1], np.int32)
    inputs, targets = ids[:-1].reshape(streams, length), ids[1:].reshape(streams, length)
    return float(losses.sequence_loss(targets, model(tf.constant(inputs), training=False)))


def test_validation_split_reproduces_the_val_loss_training_logged(trained):
    train_dir, result, _ = trained
    logged = dict(read_scalars(layout.log_dir(train_dir, "val"))["loss"])
    assert sorted(logged) == [5, 10]
    for step, val_loss in logged.items():
        checkpoint = os.path.join(layout.checkpoint_dir(train_dir), f"ckpt-{step}")
        scored = scoring.evaluate_run(train_dir, checkpoint=checkpoint)
        assert scored.checkpoint == checkpoint
        assert scored.characters == VAL_CHARS and scored.skipped_characters == 0
        assert scored.nats_per_char == pytest.approx(val_loss, abs=1e-4)
        assert scored.bits_per_char == pytest.approx(scored.nats_per_char / np.log(2), rel=1e-9)
        assert scored.perplexity == pytest.approx(np.exp(scored.nats_per_char), rel=1e-9)
    best = scoring.evaluate_run(train_dir, best=True)
    assert os.path.dirname(best.checkpoint) == layout.checkpoint_dir(train_dir, best=True)
    assert best.nats_per_char == pytest.approx(result.best_val_loss, abs=1e-4)
    assert scoring.evaluate_run(train_dir).checkpoint.endswith("ckpt-10")  # the latest by default


def test_validation_split_reproduces_the_val_loss_under_bfloat16(text_file, corpus_cache, tmp_path):
    config = make_config(
        text_file((QUOTE + " ") * 10),
        corpus_cache,
        tmp_path / "run",
        **SETTINGS,
        mixed_precision="bfloat16",
        max_steps=2,
        eval_every=2,
        ckpt_every=2,
    )
    result = trainer.train(config)
    scored = scoring.evaluate_run(config.directory.train_dir, best=True)
    assert scored.nats_per_char == pytest.approx(result.best_val_loss, abs=1e-4)


@pytest.mark.parametrize(
    "num_ids, layout",
    [(49, (3, 8, 2)), (50, (3, 8, 2)), (73, (3, 8, 3)), (25, (3, 8, 1)), (20, (2, 8, 1)), (9, (1, 8, 1))]
    + [(5, (1, 4, 1)), (2, (1, 1, 1))],
)
def test_stream_layout_uses_the_runs_streams_or_fewer(num_ids, layout):
    assert scored_text.stream_layout(num_ids, BATCH_SIZE, SEQ_LENGTH) == layout


@pytest.mark.parametrize("num_ids", [0, 1])
def test_stream_layout_needs_two_characters(num_ids):
    with pytest.raises(UserError, match="at least 2 are needed"):
        scored_text.stream_layout(num_ids, BATCH_SIZE, SEQ_LENGTH)


@pytest.mark.parametrize(
    "length, streams, seq_length, scored",
    [
        (49, 3, 16, 48),  # exactly 2 batches of 3 streams of 8: the state carries from batch to batch
        (52, 3, 16, 48),  # the same, with a tail too short for a batch, left out as training does
        (20, 2, 8, 16),  # too short for one batch of 3 streams: 2
        (5, 1, 4, 4),  # too short for one stream of 8: one of 4
    ],
)
def test_a_text_scores_in_streams(trained, text_file, length, streams, seq_length, scored):
    train_dir = trained[0]
    _, vocab = layout.load_run(train_dir)
    text = ((QUOTE + " ") * 2)[:length]
    result = scoring.evaluate_run(train_dir, data_path=text_file(text, "text.txt"))
    assert result.characters == scored and result.skipped_characters == 0
    want = _reference_loss(train_dir, vocab.encode(text), streams, seq_length)
    assert result.nats_per_char == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize(
    "length, piece_length, rows, scored",
    [
        (49, 4, 3, 48),  # 12 pieces of 4: 4 batches of 3 rows, each from a zero state
        (52, 5, 3, 45),  # 10 pieces of 5: 3 batches of 3, the tenth piece and the tail left out
        (12, 5, 2, 10),  # 2 pieces: one batch of 2 rows
    ],
)
def test_reset_every_scores_pieces_each_from_a_zero_state(
    trained, text_file, length, piece_length, rows, scored
):
    train_dir = trained[0]
    _, vocab = layout.load_run(train_dir)
    text = ((QUOTE + " ") * 2)[:length]
    result = scoring.evaluate_run(train_dir, data_path=text_file(text, "text.txt"), reset_every=piece_length)
    assert result.characters == scored
    ids = vocab.encode(text)
    pieces = [
        _reference_loss(train_dir, ids[start : start + piece_length + 1], 1, piece_length)
        for start in range(0, scored, piece_length)
    ]
    assert result.nats_per_char == pytest.approx(np.mean(pieces), abs=1e-5)
    carried = scoring.evaluate_run(train_dir, data_path=text_file(text, "text.txt"))
    assert abs(carried.nats_per_char - result.nats_per_char) > 1e-3  # context beyond a piece counts


@pytest.fixture(scope="module")
def trained_for_the_step_kernel(tmp_path_factory):
    """A tiny run of 32 units (the step kernel's multiple of 16), trained 10 steps."""
    root = tmp_path_factory.mktemp("evaluate_step")
    corpus = root / "corpus.txt"
    corpus.write_text((QUOTE + " ") * 10, encoding="utf-8")
    config = make_config(corpus, root / "cache", root / "run", **{**SETTINGS, "rnn_units": 32}, max_steps=10)
    trainer.train(config)
    return str(root / "run")


@pytest.mark.parametrize("reset_every", [0, 4])
def test_the_float32_step_scores_what_the_sequence_pass_scores(trained_for_the_step_kernel, reset_every):
    """Each character through the sampler's step, the state carried from batch to batch (or reset for each
    piece), scores what the model's sequence pass scores; bfloat16 and int8 step weights cost a little."""
    train_dir = trained_for_the_step_kernel
    want = scoring.evaluate_run(train_dir, reset_every=reset_every)
    stepped = scoring.evaluate_run(train_dir, reset_every=reset_every, step_precision="float32")
    assert stepped.characters == want.characters == 72
    assert stepped.nats_per_char == pytest.approx(want.nats_per_char, abs=1e-5)
    for precision, available in [("bfloat16", native.bfloat16_ops()), ("int8", native.int8_ops())]:
        if available:
            reduced = scoring.evaluate_run(train_dir, reset_every=reset_every, step_precision=precision)
            assert reduced.nats_per_char != stepped.nats_per_char
            assert reduced.nats_per_char == pytest.approx(want.nats_per_char, abs=0.02)


def test_reset_every_longer_than_the_text_is_refused(trained, text_file):
    with pytest.raises(UserError, match="--reset_every=20 needs at least 21: pass a smaller --reset_every"):
        scoring.evaluate_run(trained[0], data_path=text_file(QUOTE[:15], "short.txt"), reset_every=20)


def test_a_folder_scores_as_its_files_joined_with_the_runs_separator(trained, tmp_path):
    train_dir = trained[0]
    parts = [QUOTE[:30], QUOTE[30:], (QUOTE + " ") * 2]
    folder = tmp_path / "texts"
    (folder / "b").mkdir(parents=True)
    for name, text in zip(["a.txt", "b/c.txt", "d.txt"], parts, strict=True):
        (folder / name).write_text(text, encoding="utf-8")
    joined = tmp_path / "joined.txt"
    joined.write_text("\n\n".join(parts), encoding="utf-8")  # the run's separator, in sorted path order
    # The run's corpus has no newline: the two separators' four characters are left out, and counted.
    want = scoring.evaluate_run(train_dir, data_path=str(joined), skip_unknown=True)
    assert want.skipped_characters == 4
    for data_path in [str(folder), f"{folder}/a.txt,{folder}/b/c.txt,{folder}/d.txt"]:
        got = scoring.evaluate_run(train_dir, data_path=data_path, skip_unknown=True)
        assert (got.characters, got.nats_per_char, got.skipped_characters) == (
            want.characters,
            want.nats_per_char,
            want.skipped_characters,
        )


def test_the_test_split_is_the_corpus_end_and_a_run_without_one_is_refused(trained, tmp_path):
    train_dir, _, root = trained
    with pytest.raises(UserError, match=r"was trained without a test split \(--test_fraction=0\)"):
        scoring.evaluate_run(train_dir, split="test")
    chooser = np.random.default_rng(0)  # not periodic: validation and test hold different text
    text = "".join(chooser.choice(list(QUOTE), 730))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    config = make_config(
        corpus, root / "cache", tmp_path / "run", **SETTINGS, max_steps=2, val_fraction=0.1, test_fraction=0.1
    )
    trainer.train(config)
    tail = tmp_path / "tail.txt"
    tail.write_text(text[len(text) - int(len(text) * 0.1) :], encoding="utf-8")
    test = scoring.evaluate_run(str(tmp_path / "run"), split="test")
    as_text = scoring.evaluate_run(str(tmp_path / "run"), data_path=str(tail))
    assert test.characters == as_text.characters > 0
    assert test.nats_per_char == as_text.nats_per_char
    validation = scoring.evaluate_run(str(tmp_path / "run"))
    assert validation.nats_per_char != test.nats_per_char  # another stretch of the corpus


def test_a_single_character_is_refused(trained, text_file):
    with pytest.raises(UserError, match="the text has 1 character"):
        scoring.evaluate_run(trained[0], data_path=text_file("K", "one.txt"))


def test_unknown_characters_are_refused_or_left_out_and_counted(trained, text_file):
    train_dir = trained[0]
    clean = (QUOTE + " ") * 2
    path = text_file("Z" + clean[:40] + "€" + clean[40:] + "ZZ", "unknown.txt")
    with pytest.raises(UserError, match=r"outside the run's vocabulary: \['Z', '€'\]; pass --skip_unknown"):
        scoring.evaluate_run(train_dir, data_path=path)
    skipped = scoring.evaluate_run(train_dir, data_path=path, skip_unknown=True)
    assert skipped.skipped_characters == 4
    without = scoring.evaluate_run(train_dir, data_path=text_file(clean, "clean.txt"))
    assert (skipped.characters, skipped.nats_per_char) == (without.characters, without.nats_per_char)


def test_the_human_line_names_what_was_left_out():
    result = scoring.Evaluation("runs/x/checkpoints/ckpt-60", 4096, 1.23451, 1.78103, 3.43687, 0)
    line = "ckpt-60 | 4,096 characters | 1.2345 nats/char | 1.7810 bits/char | perplexity 3.437"
    assert _human_line(result) == line
    assert _human_line(dataclasses.replace(result, skipped_characters=1200)) == (
        line + " | 1,200 characters left out"
    )
    assert _human_line(dataclasses.replace(result, skipped_characters=1)).endswith(" | 1 character left out")


# The script runs of the tests below (arguments with {run} and {root}); each takes seconds to load TF.
SCRIPT_RUNS = {
    "human": ["--train_dir={run}"],
    "json": ["--train_dir={run}", "--data_path={root}/some_unknown.txt", "--skip_unknown", "--json"],
    "missing_data_path": ["--train_dir={run}", "--data_path={root}/missing.txt"],
    "no_run": ["--train_dir={root}/nothing"],
    "pieces": ["--train_dir={run}", "--reset_every=4", "--json"],
    "pieces_too_long": ["--train_dir={run}", "--reset_every=100"],
    "stepped": ["--train_dir={run}", "--step_precision=float32", "--json"],
    "bad_step_precision": ["--train_dir={run}", "--step_precision=float16"],
    "unknown_characters": ["--train_dir={run}", "--data_path={root}/some_unknown.txt"],
}


@pytest.fixture(scope="module")
def script_runs(trained):
    """{name: CompletedProcess} of SCRIPT_RUNS on the trained run, and snapshots of its root folder
    before and after them."""
    train_dir, _, root = trained
    (root / "some_unknown.txt").write_text("Z" + (QUOTE + " ") * 2, encoding="utf-8")
    seed_kernels(root / "cache")  # before the snapshot, which covers the cache folder
    before = snapshot(root)
    results = {}
    for name, arguments in SCRIPT_RUNS.items():
        arguments = [argument.format(run=train_dir, root=root) for argument in arguments]
        results[name] = run_script("evaluate.py", arguments, root / "cache", timeout=300)
    return results, before, snapshot(root)


def test_the_script_prints_one_line_or_one_json_line(trained, script_runs):
    train_dir = trained[0]
    results, before, after = script_runs
    human = results["human"]
    assert human.returncode == 0, human.stderr
    pattern = r"ckpt-10 \| 72 characters \| (\S+) nats/char \| (\S+) bits/char \| perplexity (\S+)"
    match = re.fullmatch(pattern, human.stdout.strip())
    assert match, human.stdout
    assert float(match[1]) == pytest.approx(scoring.evaluate_run(train_dir).nats_per_char, abs=1e-4)

    printed = results["json"]
    assert printed.returncode == 0, printed.stderr
    (line,) = printed.stdout.strip().splitlines()
    values = json.loads(line)
    assert set(values) == JSON_KEYS
    assert values["skipped_characters"] == 1 and values["characters"] == 144
    assert values["checkpoint"] == os.path.join(layout.checkpoint_dir(train_dir), "ckpt-10")
    assert after == before

    pieces = results["pieces"]
    assert pieces.returncode == 0, pieces.stderr
    values = json.loads(pieces.stdout)
    want = scoring.evaluate_run(train_dir, reset_every=4)  # 18 pieces of the 73-character split: 6 x 3
    assert values["characters"] == want.characters == 72
    assert values["nats_per_char"] == pytest.approx(want.nats_per_char, abs=1e-6)

    stepped = results["stepped"]  # 24 units: the float32 step (the step kernel padded to 32 where it loads)
    assert stepped.returncode == 0, stepped.stderr
    values = json.loads(stepped.stdout)
    assert values["characters"] == 72
    assert values["nats_per_char"] == pytest.approx(scoring.evaluate_run(train_dir).nats_per_char, abs=1e-5)


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing_data_path", "error: --data_path {root}/missing.txt does not exist"),
        ("no_run", "error: {root}/nothing holds no run"),
        ("pieces_too_long", "error: the text has 73 character(s); --reset_every=100 needs at least 101"),
        (
            "bad_step_precision",
            "error: --step_precision must be one of none, float32, bfloat16, int8, got 'float16'",
        ),
        (
            "unknown_characters",
            "error: --data_path {root}/some_unknown.txt has characters outside the run's vocabulary: ['Z']; "
            "pass --skip_unknown",
        ),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(trained, script_runs, name, message):
    root = trained[2]
    results, before, after = script_runs
    result = results[name]
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(message.format(root=root)), last_line
    assert after == before
    assert not os.path.exists(root / "nothing")
