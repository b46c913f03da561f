import functools
import json
import os

import numpy as np
import pytest

from helpers import QUOTE, make_config, scalar_values, tensorboard_events
from tf_charrnn.errors import UserError
from tf_charrnn.inference import sampling, scoring
from tf_charrnn.inference.sampling import Decoding
from tf_charrnn.model.char_rnn import CharRNN
from tf_charrnn.run import checkpoints, layout
from tf_charrnn.training import schedules, trainer

# A small run on `corpus`: 2 streams of 8 characters, two LSTM layers of 64 units (the fused kernels' size).
_config = functools.partial(
    make_config,
    batch_size=2,
    seq_length=8,
    embedding_dim=8,
    rnn_units=64,
    num_layers=2,
    dropout=0.0,
    max_steps=12,
    eval_every=5,
    ckpt_every=5,
    log_every=3,
    sample_length=20,
    learning_rate=0.01,
)


@pytest.fixture
def corpus(text_file):
    return text_file((QUOTE + " ") * 6)  # 438 chars: 27 batches of 2 x 8 per epoch at 0.1 val


def test_learns_a_short_text_and_reproduces_it_greedily(text_file, corpus_cache, tmp_path):
    config = make_config(
        text_file(QUOTE),
        corpus_cache,
        tmp_path / "run",
        # One window over the whole quote: telling "apply" from "do" needs context from 30+ characters back.
        batch_size=1,
        seq_length=len(QUOTE) - 1,
        val_fraction=0.0,
        embedding_dim=16,
        rnn_units=64,
        num_layers=1,
        dropout=0.0,
        learning_rate=0.01,
        lr_schedule="cosine",
        max_steps=200,
        log_every=50,
        sample_length=0,
    )
    result = trainer.train(config)
    assert np.mean(result.losses[-3:]) < 0.01
    sampler, vocab = sampling.load_sampler(config.directory.train_dir, fused_kernels=True)
    assert sampler.generate(vocab, "K", len(QUOTE) - 1, Decoding("greedy"))[0] == QUOTE[1:]


@pytest.mark.parametrize(
    "adam_epsilon_form, embedding_dropout", [("keras", 0.0), ("pytorch", 0.0), ("keras", 0.2)]
)
def test_resume_gives_bitwise_identical_losses(
    corpus, corpus_cache, tmp_path, adam_epsilon_form, embedding_dropout
):
    whole = _config(
        corpus,
        corpus_cache,
        tmp_path / "whole",
        random_offset=True,
        dropout=0.3,
        max_steps=60,
        deterministic=True,
        ckpt_every=1000,
        eval_every=7,
        adam_epsilon_form=adam_epsilon_form,
        embedding_dropout=embedding_dropout,
    )
    expected = trainer.train(whole).losses
    assert len(expected) == 60  # crosses two epoch boundaries (24 batches per epoch with offsets)
    parts = whole.replace(train_dir=str(tmp_path / "parts"), max_steps=31)
    first = trainer.train(parts).losses
    rest = trainer.train(parts.replace(max_steps=60)).losses
    assert first + rest == expected


def test_evaluation_does_not_disturb_training(corpus, corpus_cache, tmp_path):
    often = _config(corpus, corpus_cache, tmp_path / "often", eval_every=1, deterministic=True)
    never = _config(corpus, corpus_cache, tmp_path / "never", eval_every=1000, deterministic=True)
    assert trainer.train(often).losses == trainer.train(never).losses


def test_run_directory_and_tensorboard_events(corpus, corpus_cache, tmp_path):
    config = _config(corpus, corpus_cache, tmp_path / "run", keep=2)
    result = trainer.train(config)
    train_dir = config.directory.train_dir
    saved = json.load(open(os.path.join(train_dir, "config.json")))
    assert saved["model"]["vocab_size"] == len(set(QUOTE + " ")) and saved["layout"]["batch_size"] == 2
    assert "".join(json.load(open(os.path.join(train_dir, "vocab.json")))["chars"]) == "".join(
        sorted(set(QUOTE + " "))
    )
    assert result.last_checkpoint.endswith("ckpt-12")
    assert sorted(f for f in os.listdir(layout.checkpoint_dir(train_dir)) if f.endswith(".index")) == [
        "ckpt-10.index",
        "ckpt-12.index",
    ]  # keep=2
    assert checkpoints.find_checkpoint(train_dir, best=True).split("-")[-1] in {"5", "10", "12"}

    train_scalars = scalar_values(layout.log_dir(train_dir, "train"))
    assert {"loss", "bits_per_char", "learning_rate", "grad_norm", "chars_per_sec"} <= set(train_scalars)
    assert len(train_scalars["loss"]) == 4  # steps 3, 6, 9, 12
    val_scalars = scalar_values(layout.log_dir(train_dir, "val"))
    assert len(val_scalars["loss"]) == 3  # steps 5, 10, 12
    np.testing.assert_allclose(
        val_scalars["bits_per_char"], np.array(val_scalars["loss"]) / np.log(2), rtol=1e-6
    )
    np.testing.assert_allclose(val_scalars["perplexity"], np.exp(val_scalars["loss"]), rtol=1e-5)
    assert min(val_scalars["loss"]) == pytest.approx(result.best_val_loss, rel=1e-6)
    val_events = tensorboard_events(layout.log_dir(train_dir, "val"))
    sample = val_events.Tensors("sample")[-1].tensor_proto.string_val[0].decode("utf-8")
    assert len(sample) == 20


def test_refuses_a_train_dir_with_another_config_or_vocabulary(corpus, text_file, corpus_cache, tmp_path):
    config = _config(corpus, corpus_cache, tmp_path / "run", max_steps=2)
    trainer.train(config)
    before = open(layout.config_path(config.directory.train_dir)).read()
    other_model = config.replace(rnn_units=32)
    with pytest.raises(UserError, match=r"rnn_units 64 -> 32.*--init_from"):
        trainer.train(other_model)
    other_corpus = config.replace(data_path=text_file("completely different text! " * 30, "other.txt"))
    with pytest.raises(UserError, match="vocabulary"):
        trainer.train(other_corpus)
    assert open(layout.config_path(config.directory.train_dir)).read() == before


def _weights(train_dir):
    run_config, _ = layout.load_run(train_dir)
    model = CharRNN(run_config.model, batch_size=1, fused_kernels=True)
    checkpoints.restore_weights(train_dir, model)
    return model.get_weights()


# The warm run may add dropout on the embeddings that the source had not: it adds no weights.
@pytest.mark.parametrize("embedding_dropout", [0.0, 0.3])
def test_init_from_starts_from_another_runs_weights(
    corpus, text_file, corpus_cache, tmp_path, embedding_dropout
):
    source = _config(corpus, corpus_cache, tmp_path / "source", max_steps=20, eval_every=1000)
    source_losses = trainer.train(source).losses
    # A learning rate so small that one step leaves the weights as they were loaded.
    warm = trainer.train(
        _config(
            corpus,
            corpus_cache,
            tmp_path / "warm",
            max_steps=1,
            learning_rate=1e-12,
            init_from=str(tmp_path / "source"),
            embedding_dropout=embedding_dropout,
        )
    )
    warm_weights, source_weights = _weights(str(tmp_path / "warm")), _weights(str(tmp_path / "source"))
    for loaded, expected in zip(warm_weights, source_weights, strict=True):
        np.testing.assert_allclose(loaded, expected, atol=1e-6)
    assert warm.losses[0] < source_losses[0]  # starts where the source ended, not from scratch
    other_shape = _config(
        corpus, corpus_cache, tmp_path / "bad", rnn_units=32, init_from=str(tmp_path / "source")
    )
    with pytest.raises(UserError, match=r"another model shape \(rnn_units 64 there, 32 here\)"):
        trainer.train(other_shape)
    assert not os.path.exists(tmp_path / "bad")


def _logits(train_dir, text):
    run_config, vocab = layout.load_run(train_dir)
    model = CharRNN(run_config.model, batch_size=1, fused_kernels=True)
    checkpoints.restore_weights(train_dir, model)
    return model(vocab.encode(text)[None, :]).numpy()[0]


def test_fine_tuning_on_a_text_with_new_characters(corpus, text_file, corpus_cache, tmp_path, caplog):
    trainer.train(_config(corpus, corpus_cache, tmp_path / "source", max_steps=10, eval_every=1000))
    new_text = text_file(("Zebra #1 (zoo) " + QUOTE + " ") * 5, "new.txt")
    # A learning rate so small that one step leaves the weights as they were initialised.
    warm = _config(
        new_text,
        corpus_cache,
        tmp_path / "warm",
        max_steps=1,
        learning_rate=1e-12,
        init_from=str(tmp_path / "source"),
    )
    with caplog.at_level("INFO", logger="absl"):  # another test in this worker may have quieted absl
        trainer.train(warm)
    _, source_vocab = layout.load_run(str(tmp_path / "source"))
    _, vocab = layout.load_run(str(tmp_path / "warm"))
    new_chars = sorted(set("Zebra #1 (zoo)") - set(QUOTE))
    assert vocab.chars == source_vocab.chars + new_chars  # old ids kept, new ones after them
    assert f"8 new character(s) appended to the vocabulary of {tmp_path / 'source'}" in caplog.text
    assert repr("".join(new_chars)) in caplog.text
    # Text made of old characters: the old characters' logits are the source's.
    source_logits, warm_logits = (
        _logits(str(tmp_path / run), "we must apply. K") for run in ("source", "warm")
    )
    np.testing.assert_allclose(warm_logits[:, : len(source_vocab)], source_logits, atol=1e-5)
    # The fine-tuned run resumes like any run: two sessions give one session's losses.
    tuned = warm.replace(
        train_dir=str(tmp_path / "tuned"), learning_rate=0.01, max_steps=6, deterministic=True
    )
    tuned_result = trainer.train(tuned)
    whole = tuned_result.losses
    # evaluate.py scores it on its own validation split, in its vocabulary, as training did.
    scored = scoring.evaluate_run(str(tmp_path / "tuned"), best=True)
    assert scored.nats_per_char == pytest.approx(tuned_result.best_val_loss, rel=1e-5)
    parts = tuned.replace(train_dir=str(tmp_path / "parts"), max_steps=3)
    assert trainer.train(parts).losses + trainer.train(parts.replace(max_steps=6)).losses == whole


def test_restore_weights_into_any_batch_size(corpus, corpus_cache, tmp_path):
    config = _config(corpus, corpus_cache, tmp_path / "run", max_steps=3)
    trainer.train(config)
    run_config, _ = layout.load_run(config.directory.train_dir)
    for batch_size in (1, 5):
        model = CharRNN(run_config.model, batch_size, fused_kernels=True)
        path = checkpoints.restore_weights(config.directory.train_dir, model)
        assert path.endswith("ckpt-3")
    with pytest.raises(UserError, match="holds no run"):
        checkpoints.restore_weights(str(tmp_path / "nothing"), model)


def test_divergence_stops_without_saving_a_bad_checkpoint(corpus, corpus_cache, tmp_path, monkeypatch):
    config = _config(corpus, corpus_cache, tmp_path / "run", max_steps=4, ckpt_every=2, eval_every=1000)
    trainer.train(config)
    # The run goes on at a learning rate that blows it up (the optimisation itself may not change on resume).
    monkeypatch.setattr(schedules, "learning_rate", lambda *args: 1e38)
    with pytest.raises(UserError, match=r"training diverged at step \d+ .*lower --learning_rate"):
        trainer.train(config.replace(max_steps=40))
    latest = checkpoints.find_checkpoint(config.directory.train_dir)
    model = CharRNN(layout.load_run(config.directory.train_dir)[0].model, batch_size=1, fused_kernels=True)
    checkpoints.restore_weights(config.directory.train_dir, model)
    assert all(np.isfinite(w).all() for w in model.get_weights()), latest


def _truncate_data(path):
    data_file = path + ".data-00000-of-00001"
    with open(data_file, "rb") as f:
        kept = f.read()[:100]
    with open(data_file, "wb") as f:  # as a full disk leaves it
        f.write(kept)


def _garble_index(path):
    with open(path + ".index", "r+b") as f:
        f.seek(20)
        f.write(b"\xde\xad\xbe\xef" * 16)


@pytest.mark.parametrize("damage", [_truncate_data, _garble_index])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous(damage, corpus, corpus_cache, tmp_path, caplog):
    whole = _config(
        corpus,
        corpus_cache,
        tmp_path / "whole",
        max_steps=8,
        deterministic=True,
        dropout=0.2,
        eval_every=1000,
    )
    expected = trainer.train(whole).losses
    parts = whole.replace(train_dir=str(tmp_path / "parts"), max_steps=6, ckpt_every=2)
    trainer.train(parts)
    damage(str(tmp_path / "parts" / "checkpoints" / "ckpt-6"))
    with caplog.at_level("WARNING"):
        resumed = trainer.train(parts.replace(max_steps=8))
    assert "ckpt-6 is unreadable" in caplog.text
    assert resumed.losses == expected[4:]  # steps 5..8 again, from ckpt-4
