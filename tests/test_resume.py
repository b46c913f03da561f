"""Continuing a run from its directory alone; what may change on resume and what is refused; --patience."""

import dataclasses
import logging
import os

import pytest
import tensorflow as tf

from helpers import QUOTE, make_config, read_scalars, run_script, smoke_args, snapshot
from tf_charrnn.run import checkpoints, layout, resume
from tf_charrnn.training import trainer
from tf_charrnn.training.position import TrainPosition


@pytest.fixture(scope="module")
def run_10_steps(tmp_path_factory):
    """A smoke run of 10 steps, trained by the script: (run directory, cache)."""
    root = tmp_path_factory.mktemp("resume")
    corpus = root / "corpus.txt"
    corpus.write_text((QUOTE + "\n") * 30, encoding="utf-8")
    cache = str(root / "cache")
    result = run_script(
        "train.py", smoke_args(root / "run", f"--data_path={corpus}", "--max_steps=10"), cache
    )
    assert result.returncode == 0, result.stderr
    assert "recurrent layers on the fused C++ kernels" in result.stderr or "TensorFlow's ops" in result.stderr
    assert "Model: 53,318 parameters; 1 replica on CPU (--strategy=auto); precision float32" in result.stderr
    return str(root / "run"), cache


@pytest.mark.slow
@pytest.mark.parametrize(
    "flag, difference",
    [
        ("--rnn_units=32", "rnn_units 64 -> 32"),
        ("--learning_rate=0.5", "learning_rate 0.002 -> 0.5"),
        ("--seed=7", "seed 42 -> 7"),
        ("--seq_length=8", "seq_length 16 -> 8"),
    ],
)
def test_a_flag_that_must_match_is_refused_and_nothing_changes(run_10_steps, flag, difference):
    train_dir, cache = run_10_steps
    before = snapshot(train_dir)
    result = run_script("train.py", [f"--train_dir={train_dir}", flag, "--max_steps=12"], cache)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {train_dir} holds a run with another config ({difference}); use a new --train_dir, "
        f"or --init_from={train_dir} to start from its weights"
    )
    assert snapshot(train_dir) == before


@pytest.mark.slow
def test_the_train_dir_alone_resumes_and_extends_with_the_flags_that_may_change(run_10_steps, tmp_path):
    train_dir, cache = run_10_steps
    args = [f"--train_dir={train_dir}", "--max_steps=14", "--log_every=1", "--keep=1", "--strategy=default"]
    result = run_script("train.py", args, cache)
    assert result.returncode == 0, result.stderr
    assert f"Resumed {train_dir}/checkpoints/ckpt-10 at step 10" in result.stderr
    assert "The run now ends at step 14, not 10: the exponential schedule decays per epoch" in result.stderr
    logged_steps = [step for step, _ in read_scalars(os.path.join(train_dir, "logs", "train"))["loss"]]
    assert logged_steps == [5, 10, 11, 12, 13, 14]  # --log_every 5 (smoke.cfg), then 1 as given
    config, _ = layout.load_run(train_dir)
    assert (config.length.max_steps, config.cadence.log_every, config.cadence.keep) == (14, 1, 1)
    assert (
        config.model.rnn_units == 64 and config.runtime.strategy == "default"
    )  # the run's own, and the given
    assert sorted(f for f in os.listdir(os.path.join(train_dir, "checkpoints")) if f.endswith(".index")) == [
        "ckpt-14.index"
    ]


@pytest.mark.slow
def test_init_from_alone_takes_the_source_runs_model_and_adds_the_new_characters(run_10_steps, tmp_path):
    source_dir, cache = run_10_steps
    new_text = tmp_path / "new.txt"
    new_text.write_text((QUOTE + " Zebra #1\n") * 800, encoding="utf-8")
    args = [f"--init_from={source_dir}", f"--data_path={new_text}", f"--train_dir={tmp_path / 'tuned'}"]
    result = run_script("train.py", [*args, "--max_steps=2"], cache)
    assert result.returncode == 0, result.stderr
    assert f"Initialized weights from {source_dir}/checkpoints/ckpt-" in result.stderr  # its latest
    assert (
        f"5 new character(s) appended to the vocabulary of {source_dir} (ids 22 to 26): '#1Zbr'"
        in result.stderr
    )
    tuned, _ = layout.load_run(str(tmp_path / "tuned"))
    source, _ = layout.load_run(source_dir)
    assert tuned.model == dataclasses.replace(source.model, vocab_size=source.model.vocab_size + 5)


def _run_config(text_file, corpus_cache, tmp_path, **values):
    return make_config(
        text_file((QUOTE + " ") * 6),
        corpus_cache,
        tmp_path / "run",
        **{
            "batch_size": 2,
            "seq_length": 8,
            "embedding_dim": 8,
            "rnn_units": 64,
            "dropout": 0.0,
            "learning_rate": 0.01,
            "eval_every": 1,
            "ckpt_every": 100,
            "sample_length": 0,
            **values,
        },
    )


def _scripted_validation(monkeypatch, losses):
    """Makes each validation return the next of `losses`."""
    remaining = list(losses)
    monkeypatch.setattr(trainer.Trainer, "evaluate", lambda self: remaining.pop(0))


def test_patience_stops_at_the_right_validation_and_resume_keeps_the_count(
    text_file, corpus_cache, tmp_path, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, logger="absl")
    config = _run_config(text_file, corpus_cache, tmp_path, max_steps=20, patience=2, lr_schedule="cosine")
    _scripted_validation(monkeypatch, [3.0, 2.0, 2.5, 2.4])
    result = trainer.train(config)
    # Validation after every step: a new best at step 2, none at steps 3 and 4.
    assert (result.step, result.stopped_early, result.best_val_loss) == (4, True, 2.0)
    assert "Stopping early at step 4: 2 validations without a new best" in caplog.text
    assert checkpoints.find_checkpoint(config.directory.train_dir).endswith("ckpt-4")
    # Resumed with the same patience: the count was saved, so it stops before a step.
    assert trainer.train(config).step == 4
    # With more patience it trains on, and one more validation without a new best uses it up.
    caplog.clear()
    _scripted_validation(monkeypatch, [2.1])
    result = trainer.train(config.replace(patience=3))
    assert (result.step, result.stopped_early) == (5, True)
    assert "The run now ends" not in caplog.text  # same length: no schedule change to report


def test_a_longer_cosine_run_says_what_its_learning_rate_does(text_file, corpus_cache, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="absl")
    config = _run_config(text_file, corpus_cache, tmp_path, max_steps=3, lr_schedule="cosine", eval_every=100)
    trainer.train(config)
    caplog.clear()
    result = trainer.train(config.replace(max_steps=6))
    assert result.step == 6
    assert (
        "The run now ends at step 6, not 3: the cosine schedule decays over the new length, so the "
        "learning rate at step 3 is 0.005 (it was 0)"
    ) in caplog.text


def test_every_field_that_must_match_is_refused_on_resume_and_nothing_is_written(
    text_file, corpus_cache, tmp_path
):
    import dataclasses

    from tf_charrnn.config import RunConfig
    from tf_charrnn.errors import UserError

    config = _run_config(text_file, corpus_cache, tmp_path, max_steps=1, eval_every=100)
    trainer.train(config)
    config, vocab = layout.load_run(config.directory.train_dir)
    before = snapshot(config.directory.train_dir)
    other_strings = {
        "lstm": "gru",
        "exponential": "cosine",
        "none": "bfloat16",
        "normal": "uniform",
        "keras": "pytorch",
    }

    def other(value):
        if isinstance(value, bool):
            return not value
        if isinstance(value, str):
            return other_strings[value]
        return value + 1 if isinstance(value, int) else (value / 2 if value else 0.001)

    refused = []
    for name, section in RunConfig.sections().items():
        if not section.must_match_on_resume:
            continue
        for field in dataclasses.fields(section):
            if field.metadata.get("derived"):
                continue
            value = getattr(getattr(config, name), field.name)
            changed = config.replace(**{field.name: other(value)})
            with pytest.raises(UserError, match=rf"another config \({field.name} {value!r} -> "):
                resume.prepare(changed, vocab)
            refused.append(field.name)
    assert snapshot(config.directory.train_dir) == before
    assert len(refused) == 30 and {
        "rnn_units",
        "skip_connections",
        "embedding_dropout",
        "batch_size",
        "mixed_precision",
        "seed",
        "test_fraction",
        "state_reset_probability",
        "adam_epsilon_form",
        "adam_beta2",
        "weight_decay",
        "ema_decay",
        "dropout_from_step",
    } <= set(refused)


def test_the_position_counts_steps_across_an_epoch_and_a_checkpoint_holds_what_store_wrote(tmp_path):
    position = TrainPosition()
    for batch in range(3):
        position.advance(0, batch, steps_per_epoch=3)
    position.advance(1, 0, steps_per_epoch=3)
    assert (position.step, position.epoch, position.batch_in_epoch) == (4, 1, 1)
    assert int(position.step_variable) == 0  # counted in Python: the variables wait for a save
    position.store()
    path = tf.train.Checkpoint(**position.checkpointed()).write(str(tmp_path / "position"))
    restored = TrainPosition()
    tf.train.Checkpoint(**restored.checkpointed()).read(path).assert_consumed()
    restored.load()
    assert (restored.step, restored.epoch, restored.batch_in_epoch) == (4, 1, 1)
