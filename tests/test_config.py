import pytest

from tf_charrnn.config import DataConfig, ModelConfig, RunConfig, TrainConfig, UserError


@pytest.mark.parametrize(
    "section, field, value, fragment",
    [
        (DataConfig, "batch_size", 0, "--batch_size must be an integer >= 1"),
        (DataConfig, "seq_length", -3, "--seq_length"),
        (DataConfig, "val_fraction", 1.0, "--val_fraction must be in [0, 1)"),
        (ModelConfig, "rnn_units", 0, "--rnn_units"),
        (ModelConfig, "num_layers", 0, "--num_layers"),
        (ModelConfig, "embedding_dim", 0, "--embedding_dim"),
        (ModelConfig, "dropout", 1.0, "--dropout must be in [0, 1)"),
        (ModelConfig, "cell", "transformer", "--cell must be one of lstm, gru, rnn"),
        (TrainConfig, "learning_rate", 0.0, "--learning_rate must be > 0"),
        (TrainConfig, "grad_clip", 0.0, "--grad_clip must be > 0"),
        (TrainConfig, "lr_schedule", "step", "--lr_schedule"),
        (TrainConfig, "eval_every", 0, "--eval_every"),
    ],
)
def test_bad_values_name_the_flag(section, field, value, fragment):
    with pytest.raises(UserError) as error:
        section(**{field: value})
    assert fragment in str(error.value)


def test_dict_round_trip_and_unknown_keys():
    config = RunConfig(model=ModelConfig(vocab_size=65, rnn_units=128))
    assert RunConfig.from_dict(config.to_dict()) == config
    values = config.to_dict()
    values["model"]["units"] = 3
    with pytest.raises(UserError, match="units"):
        RunConfig.from_dict(values)
