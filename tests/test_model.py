import numpy as np
import pytest

from helpers import assert_models_agree
from tf_charrnn.config import ModelConfig
from tf_charrnn.model.char_rnn import CharRNN

CONFIG = ModelConfig(vocab_size=12, embedding_dim=6, rnn_units=8, num_layers=2, dropout=0.0)


def _ids(batch_size, length, seed=0):
    return np.random.default_rng(seed).integers(0, 12, (batch_size, length)).astype(np.int32)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_two_halves_with_state_equal_one_pass(cell):
    config = ModelConfig(**{**CONFIG.__dict__, "cell": cell})
    model = CharRNN(config, batch_size=3, seed=1, fused_kernels=True)
    ids = _ids(3, 10)
    whole = model(ids).numpy()
    model.reset_state()
    halves = np.concatenate([model(ids[:, :4]).numpy(), model(ids[:, 4:]).numpy()], axis=1)
    np.testing.assert_allclose(halves, whole, rtol=1e-5, atol=1e-6)
    assert whole.shape == (3, 10, 12)


def test_reset_states_zeroes_the_state():
    model = CharRNN(CONFIG, batch_size=2, fused_kernels=True)
    model(_ids(2, 5))
    assert any(np.abs(v.numpy()).sum() > 0 for v in model.state_variables)
    model.reset_state()
    assert all(np.abs(v.numpy()).sum() == 0 for v in model.state_variables)
    assert len(model.state_variables) == 4  # h and c for 2 LSTM layers


def test_weights_moved_to_batch_one_give_row_zero():
    big = CharRNN(CONFIG, batch_size=4, seed=3, fused_kernels=True)
    ids = _ids(4, 7, seed=2)
    expected = big(ids).numpy()[0]
    small = CharRNN(CONFIG, batch_size=1, fused_kernels=True)
    small.copy_weights_from(big)
    np.testing.assert_allclose(small(ids[:1]).numpy()[0], expected, rtol=1e-5, atol=1e-6)


def test_layers_are_named_and_dropout_between_layers():
    model = CharRNN(ModelConfig(vocab_size=5, num_layers=3, rnn_units=4, cell="gru"), batch_size=1)
    names = [layer.name for layer in model.layers]
    assert names == [
        "ids",
        "embedding",
        "gru_1",
        "dropout_1",
        "gru_2",
        "dropout_2",
        "gru_3",
        "dropout_3",
        "logits",
    ]
    assert [layer.name for layer in model.recurrent_layers] == ["gru_1", "gru_2", "gru_3"]


def test_embedding_dropout_is_a_layer_after_the_embedding_only_where_set():
    with_it = CharRNN(ModelConfig(vocab_size=5, rnn_units=4, embedding_dropout=0.1), batch_size=1)
    assert [layer.name for layer in with_it.layers][1:3] == ["embedding", "embedding_dropout"]
    assert with_it.get_layer("embedding_dropout").rate == 0.1
    without = CharRNN(ModelConfig(vocab_size=5, rnn_units=4), batch_size=1)
    assert "embedding_dropout" not in [layer.name for layer in without.layers]


@pytest.mark.parametrize("fused", [True, False])
def test_embedding_dropout_drops_in_training_only_and_follows_the_seed(fused):
    import keras
    import tensorflow as tf

    config = ModelConfig(**{**CONFIG.__dict__, "rnn_units": 64, "embedding_dropout": 0.5})
    ids = tf.random.stateless_uniform([2, 9], seed=[1, 2], maxval=12, dtype=tf.int32)

    def outputs(seed, training):
        keras.utils.set_random_seed(3)
        model = CharRNN(config, batch_size=2, seed=seed, fused_kernels=fused)
        return model(ids, training=training).numpy()

    inference = outputs(4, training=False)
    keras.utils.set_random_seed(3)
    plain_config = ModelConfig(**{**config.__dict__, "embedding_dropout": 0.0})
    plain = CharRNN(plain_config, batch_size=2, seed=4, fused_kernels=fused)
    np.testing.assert_allclose(plain(ids, training=True).numpy(), inference, rtol=1e-5, atol=1e-6)
    trained = outputs(4, training=True)
    assert np.abs(trained - inference).max() > 1e-3
    np.testing.assert_array_equal(outputs(4, training=True), trained)
    assert np.abs(outputs(5, training=True) - trained).max() > 1e-3


def test_lstm_keeps_cudnn_eligible_settings():
    model = CharRNN(CONFIG, batch_size=1, fused_kernels=True)
    for layer in model.recurrent_layers:
        assert layer.activation.__name__ == "tanh"
        assert layer.recurrent_activation.__name__ == "sigmoid"
        assert layer.recurrent_dropout == 0 and not layer.unroll and layer.use_bias


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_unrolled_model_matches_the_loop_in_outputs_state_and_gradients(cell):
    import tensorflow as tf

    config = ModelConfig(**{**CONFIG.__dict__, "cell": cell})
    looped = CharRNN(config, batch_size=3, seed=1, fused_kernels=True)
    unrolled = CharRNN(config, batch_size=3, seed=1, unroll=True, fused_kernels=True)
    unrolled.copy_weights_from(looped)
    assert_models_agree(unrolled, looped, tf.constant(_ids(3, 10)))
    for got, want in zip(unrolled.state_variables, looped.state_variables, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("skip_connections", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_step_matches_the_sequence_call_in_logits_and_state(cell, skip_connections):
    import tensorflow as tf

    config = ModelConfig(**{**CONFIG.__dict__, "cell": cell, "skip_connections": skip_connections})
    model = CharRNN(config, batch_size=3, seed=1)
    assert model.head.kernel.shape == (16 if skip_connections else 8, 12)
    ids = _ids(3, 6)
    want = model(ids).numpy()
    state = model.initial_state(3)
    assert state.shape == (2, 2 if cell == "lstm" else 1, 3, 8)
    weights = model.step_weights()
    for position in range(6):
        logits, state = model.step(tf.constant(ids[:, position]), state, weights)
        np.testing.assert_allclose(logits, want[:, position], rtol=0, atol=1e-5)
    carried = np.reshape(state.numpy(), (-1, 3, 8))  # layer by layer: h (and c)
    for got, variable in zip(carried, model.state_variables, strict=True):
        np.testing.assert_allclose(got, variable.numpy(), rtol=0, atol=1e-5)


def test_skip_connections_feed_every_layer_to_the_logits():
    config = ModelConfig(**{**CONFIG.__dict__, "num_layers": 3, "skip_connections": True})
    model = CharRNN(config, batch_size=2, seed=1, fused_kernels=True)
    names = [layer.name for layer in model.layers]
    assert names[-2:] == ["skip_connections", "logits"] and model.head.kernel.shape == (24, 12)
    concatenated = model.get_layer("skip_connections").input
    assert [tensor._keras_history.operation.name for tensor in concatenated] == [
        "dropout_1",
        "dropout_2",
        "dropout_3",
    ]
    ids = _ids(2, 5)
    with_all = model(ids).numpy()
    kernel = model.head.kernel.numpy()
    model.head.kernel.assign(np.concatenate([np.zeros_like(kernel[:16]), kernel[16:]]))
    model.reset_state()
    assert np.abs(model(ids).numpy() - with_all).max() > 1e-4  # the first two layers' rows count
    one_layer = CharRNN(ModelConfig(**{**config.__dict__, "num_layers": 1}), batch_size=2)
    assert "skip_connections" not in [layer.name for layer in one_layer.layers]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_larger_vocabulary_keeps_the_old_characters_logits(cell):
    shape = {"cell": cell, "skip_connections": cell == "gru"}
    source = CharRNN(ModelConfig(**{**CONFIG.__dict__, **shape}), batch_size=2, seed=5, fused_kernels=True)
    source.set_weights([w * 3.0 for w in source.get_weights()])  # far from the initialiser's
    larger = ModelConfig(**{**CONFIG.__dict__, **shape, "vocab_size": 15})
    model = CharRNN(larger, batch_size=2, seed=9, fused_kernels=True)
    model.copy_weights_extending_vocab(source)
    ids = _ids(2, 9, seed=4)  # old characters only
    np.testing.assert_allclose(model(ids).numpy()[..., :12], source(ids).numpy(), rtol=1e-6, atol=1e-6)
    # The new characters: the mean embedding row, a zero logit column and the lowest old bias.
    embedding, kernel, bias = (
        v.numpy() for v in (model.embedding.embeddings, model.head.kernel, model.head.bias)
    )
    old_embedding = source.embedding.embeddings.numpy()
    np.testing.assert_allclose(embedding[12:], np.tile(old_embedding.mean(axis=0), (3, 1)), rtol=1e-6)
    assert not kernel[:, 12:].any() and (bias[12:] == source.head.bias.numpy().min()).all()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_pytorch_initialisers_draw_pytorchs_scales(cell):
    config = ModelConfig(
        vocab_size=40,
        embedding_dim=64,
        rnn_units=256,
        num_layers=1,
        dropout=0.0,
        cell=cell,
        weight_initializer="pytorch",
    )
    model = CharRNN(config, batch_size=1, seed=1, fused_kernels=True)
    embedding = model.embedding.embeddings.numpy()
    assert abs(embedding.std() - 1.0) < 0.05 and abs(embedding.mean()) < 0.05  # nn.Embedding: N(0, 1)
    limit = 1 / np.sqrt(256)  # every weight U(-1/sqrt(H), 1/sqrt(H)); its std is limit / sqrt(3)
    weights = model.recurrent_layers[0].trainable_weights
    for weight in [*weights[:2], model.head.kernel]:
        values = weight.numpy()
        assert np.abs(values).max() <= limit and abs(values.std() - limit / np.sqrt(3)) < 0.05 * limit
    assert np.abs(model.head.bias.numpy()).max() <= limit and model.head.bias.numpy().std() > 0
    bias = weights[2].numpy()
    # Keras holds the LSTM's and the RNN's b_ih + b_hh as one bias: a sum of two draws, up to 2 limits.
    bias_limit = limit if cell == "gru" else 2 * limit
    assert (
        np.abs(bias).max() <= bias_limit
        and abs(bias.std() - bias_limit / np.sqrt(6 if cell != "gru" else 3)) < 0.1 * limit
    )


def test_keras_initialisers_keep_keras_defaults():
    config = ModelConfig(
        vocab_size=40,
        embedding_dim=64,
        rnn_units=64,
        num_layers=1,
        dropout=0.0,
        embedding_initializer="uniform",
        weight_initializer="keras",
    )
    model = CharRNN(config, batch_size=1, seed=1, fused_kernels=True)
    assert np.abs(model.embedding.embeddings.numpy()).max() <= 0.05
    kernel, recurrent_kernel, bias = (
        weight.numpy() for weight in model.recurrent_layers[0].trainable_weights
    )
    np.testing.assert_allclose(recurrent_kernel @ recurrent_kernel.T, np.eye(64), atol=1e-5)  # orthogonal
    assert np.abs(kernel).max() <= np.sqrt(6 / (64 + 256))  # glorot uniform
    np.testing.assert_array_equal(
        bias, np.concatenate([np.zeros(64), np.ones(64), np.zeros(128)])
    )  # forget gate 1
    assert np.abs(model.head.bias.numpy()).max() == 0
