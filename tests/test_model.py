import numpy as np
import pytest

from conftest import assert_models_agree
from tf_charrnn import model as model_lib
from tf_charrnn.config import ModelConfig

CONFIG = ModelConfig(vocab_size=12, embedding_dim=6, rnn_units=8, num_layers=2, dropout=0.0)


def _ids(batch_size, length, seed=0):
    return np.random.default_rng(seed).integers(0, 12, (batch_size, length)).astype(np.int32)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_two_halves_with_state_equal_one_pass(cell):
    config = ModelConfig(**{**CONFIG.__dict__, "cell": cell})
    model = model_lib.build_model(config, batch_size=3, seed=1)
    ids = _ids(3, 10)
    whole = model(ids).numpy()
    model_lib.reset_states(model)
    halves = np.concatenate([model(ids[:, :4]).numpy(), model(ids[:, 4:]).numpy()], axis=1)
    np.testing.assert_allclose(halves, whole, rtol=1e-5, atol=1e-6)
    assert whole.shape == (3, 10, 12)


def test_reset_states_zeroes_the_state():
    model = model_lib.build_model(CONFIG, batch_size=2)
    model(_ids(2, 5))
    assert any(np.abs(v.numpy()).sum() > 0 for v in model_lib.state_variables(model))
    model_lib.reset_states(model)
    assert all(np.abs(v.numpy()).sum() == 0 for v in model_lib.state_variables(model))
    assert len(model_lib.state_variables(model)) == 4  # h and c for 2 LSTM layers


def test_weights_moved_to_batch_one_give_row_zero():
    big = model_lib.build_model(CONFIG, batch_size=4, seed=3)
    ids = _ids(4, 7, seed=2)
    expected = big(ids).numpy()[0]
    small = model_lib.build_model(CONFIG, batch_size=1)
    model_lib.copy_weights(big, small)
    np.testing.assert_allclose(small(ids[:1]).numpy()[0], expected, rtol=1e-5, atol=1e-6)


def test_layers_are_named_and_dropout_between_layers():
    model = model_lib.build_model(
        ModelConfig(vocab_size=5, num_layers=3, rnn_units=4, cell="gru"), batch_size=1
    )
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


def test_lstm_keeps_cudnn_eligible_settings():
    model = model_lib.build_model(CONFIG, batch_size=1)
    for layer in model_lib.recurrent_layers(model):
        assert layer.activation.__name__ == "tanh"
        assert layer.recurrent_activation.__name__ == "sigmoid"
        assert layer.recurrent_dropout == 0 and not layer.unroll and layer.use_bias


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_unrolled_model_matches_the_loop_in_outputs_state_and_gradients(cell):
    import tensorflow as tf

    config = ModelConfig(**{**CONFIG.__dict__, "cell": cell})
    looped = model_lib.build_model(config, batch_size=3, seed=1)
    unrolled = model_lib.build_model(config, batch_size=3, seed=1, unroll=True)
    model_lib.copy_weights(looped, unrolled)
    assert_models_agree(unrolled, looped, tf.constant(_ids(3, 10)))
    for got, want in zip(model_lib.state_variables(unrolled), model_lib.state_variables(looped), strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-5)
