"""--ema_decay: the moving average of the weights, how a run keeps, resumes and is judged by it."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from helpers import QUOTE, make_config
from tf_charrnn.inference import scoring
from tf_charrnn.model.char_rnn import CharRNN
from tf_charrnn.run import checkpoints, layout
from tf_charrnn.training import trainer
from tf_charrnn.training.weight_average import WeightAverage

_config = functools.partial(
    make_config,
    batch_size=2,
    seq_length=8,
    embedding_dim=8,
    rnn_units=64,
    num_layers=2,
    dropout=0.0,
    max_steps=12,
    eval_every=6,
    ckpt_every=6,
    sample_length=20,
    learning_rate=0.01,
    ema_decay=0.8,
)


@pytest.fixture
def corpus(text_file):
    return text_file((QUOTE + " ") * 6)


def test_the_average_follows_its_formula_and_swapping_it_in_is_exact():
    weights = [tf.Variable([1.0, -2.0]), tf.Variable([[3.0]])]
    average = WeightAverage(weights, decay=0.9)
    weights[0].assign([2.0, 0.0])
    weights[1].assign([[-1.0]])
    update = tf.function(average.update)
    update(tf.constant(1000.0))  # late in a run: d = decay
    np.testing.assert_allclose(average.variables[0].numpy(), [1.1, -1.8], rtol=1e-6)
    np.testing.assert_allclose(average.variables[1].numpy(), [[2.6]], rtol=1e-6)
    weights[1].assign([[2.6 + 11.0]])
    update(tf.constant(1.0))  # after a run's first step: d = (1 + 1) / (10 + 1), not the decay
    np.testing.assert_allclose(average.variables[1].numpy(), [[2.6 + 9.0]], rtol=1e-6)
    raw = [weight.numpy() for weight in weights]
    averaged = [variable.numpy() for variable in average.variables]
    with average.swapped_in():
        for weight, want in zip(weights, averaged, strict=True):
            np.testing.assert_array_equal(weight.numpy(), want)
    for weight, want in zip(weights, raw, strict=True):
        np.testing.assert_array_equal(weight.numpy(), want)
    for variable, want in zip(average.variables, averaged, strict=True):
        np.testing.assert_array_equal(variable.numpy(), want)
    average.reset()
    np.testing.assert_array_equal(average.variables[0].numpy(), [2.0, 0.0])


def _checkpoint_tensors(path, prefix):
    reader = tf.train.load_checkpoint(path)
    names = [name for name in reader.get_variable_to_shape_map() if name.startswith(prefix + "/")]
    return {name.split("/")[1]: reader.get_tensor(name) for name in names}


def test_a_run_is_validated_and_read_back_with_its_average(corpus, corpus_cache, tmp_path):
    config = _config(corpus, corpus_cache, tmp_path / "run")
    result = trainer.train(config)
    train_dir = config.directory.train_dir
    averages = _checkpoint_tensors(result.last_checkpoint, "weight_average")
    run_config, _ = layout.load_run(train_dir)
    model = CharRNN(run_config.model, batch_size=1, fused_kernels=True)
    checkpoints.restore_weights(train_dir, model)
    raw = _checkpoint_tensors(result.last_checkpoint, "weights")
    assert len(averages) == len(model.trainable_weights) == 9
    for index, weight in enumerate(model.trainable_weights):
        np.testing.assert_array_equal(weight.numpy(), averages[str(index)])
        assert np.abs(weight.numpy() - raw[str(index)]).max() > 1e-4  # the average, not the raw weights
    # Training's validation and evaluate.py's score of the same checkpoint see the same (averaged) model.
    assert scoring.evaluate_run(train_dir).nats_per_char == pytest.approx(result.last_val_loss, abs=1e-5)
    without = trainer.train(config.replace(train_dir=str(tmp_path / "without"), ema_decay=0.0))
    assert without.losses == result.losses  # the average leaves training's own weights alone
    assert without.last_val_loss != pytest.approx(result.last_val_loss, abs=1e-4)


def test_a_resumed_run_keeps_its_average_bit_for_bit(corpus, corpus_cache, tmp_path):
    whole = _config(corpus, corpus_cache, tmp_path / "whole", deterministic=True, ckpt_every=1000)
    expected = trainer.train(whole)
    parts = whole.replace(train_dir=str(tmp_path / "parts"), max_steps=5)
    trainer.train(parts)
    resumed = trainer.train(parts.replace(max_steps=12))
    assert resumed.last_val_loss == expected.last_val_loss
    want = _checkpoint_tensors(expected.last_checkpoint, "weight_average")
    got = _checkpoint_tensors(resumed.last_checkpoint, "weight_average")
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)


def test_init_from_starts_the_average_at_the_loaded_weights(corpus, corpus_cache, tmp_path):
    trainer.train(_config(corpus, corpus_cache, tmp_path / "source", ema_decay=0.0, eval_every=1000))
    # A rate so small that the one step leaves the weights as loaded: the average must be them too.
    warm = trainer.train(
        _config(
            corpus,
            corpus_cache,
            tmp_path / "warm",
            max_steps=1,
            learning_rate=1e-12,
            init_from=str(tmp_path / "source"),
        )
    )
    source = _checkpoint_tensors(checkpoints.find_checkpoint(str(tmp_path / "source")), "weights")
    averages = _checkpoint_tensors(warm.last_checkpoint, "weight_average")
    for index, value in averages.items():
        np.testing.assert_allclose(value, source[index], atol=1e-6)


def test_mirrored_training_keeps_the_same_average(text_file, corpus_cache, tmp_path):
    config = functools.partial(
        _config, text_file((QUOTE + " ") * 12), corpus_cache, batch_size=4, max_steps=8, eval_every=4
    )
    single = trainer.train(config(tmp_path / "default", strategy="default"))
    mirrored = trainer.train(config(tmp_path / "mirrored", strategy="mirrored"))
    assert mirrored.last_val_loss == pytest.approx(single.last_val_loss, abs=1e-5)
    want = _checkpoint_tensors(single.last_checkpoint, "weight_average")
    for name, value in _checkpoint_tensors(mirrored.last_checkpoint, "weight_average").items():
        np.testing.assert_allclose(value, want[name], rtol=0, atol=1e-5)
