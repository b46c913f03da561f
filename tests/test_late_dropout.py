"""--dropout_from_step: a run trains without dropout before that step and with it from that step on."""

import functools

import pytest

from helpers import QUOTE, make_config
from tf_charrnn.training import trainer

_config = functools.partial(
    make_config,
    batch_size=2,
    seq_length=8,
    embedding_dim=8,
    rnn_units=64,
    num_layers=2,
    dropout=0.3,
    embedding_dropout=0.2,
    dropout_from_step=4,
    max_steps=8,
    eval_every=8,
    ckpt_every=1000,
    sample_length=0,
    learning_rate=0.01,
    deterministic=True,
)


@pytest.fixture
def corpus(text_file):
    return text_file((QUOTE + " ") * 6)


@pytest.mark.parametrize("mixed_precision", ["none", "bfloat16"])
def test_the_steps_before_it_are_those_of_a_run_without_dropout(
    corpus, corpus_cache, tmp_path, mixed_precision
):
    run = functools.partial(_config, corpus, corpus_cache, mixed_precision=mixed_precision)
    late = trainer.train(run(tmp_path / "late"))
    never = trainer.train(run(tmp_path / "never", dropout=0.0, embedding_dropout=0.0))
    always = trainer.train(run(tmp_path / "always", dropout_from_step=0))
    assert len(late.losses) == 8
    assert late.losses[:4] == never.losses[:4]  # the same initial weights, no dropout: bit for bit
    assert all(late.losses[step] != never.losses[step] for step in range(4, 8))
    assert late.losses[0] != always.losses[0]  # dropout from the first step changes the first loss


def test_a_run_resumed_before_the_switch_trains_as_one_that_was_not_stopped(corpus, corpus_cache, tmp_path):
    whole = trainer.train(_config(corpus, corpus_cache, tmp_path / "whole"))
    parts = _config(corpus, corpus_cache, tmp_path / "parts", max_steps=3)
    first = trainer.train(parts)
    rest = trainer.train(parts.replace(max_steps=8))
    assert first.losses + rest.losses == whole.losses
    assert rest.last_val_loss == whole.last_val_loss


def test_the_step_logs_where_dropout_starts(corpus, corpus_cache, tmp_path, caplog):
    with caplog.at_level("INFO", logger="absl"):  # another test in this worker may have quieted absl
        trainer.train(_config(corpus, corpus_cache, tmp_path / "run", max_steps=5))
    assert "Dropout on from step 4 (--dropout_from_step)" in caplog.text
