import json
import os
import subprocess
import sys

import pytest

from helpers import REPO_ROOT
from tf_charrnn.config import (
    CadenceConfig,
    LayoutConfig,
    ModelConfig,
    OptimizationConfig,
    RunConfig,
    escape,
    unescape,
)
from tf_charrnn.errors import UserError


@pytest.mark.parametrize(
    "section, field, value, fragment",
    [
        (LayoutConfig, "batch_size", 0, "--batch_size must be an integer >= 1"),
        (LayoutConfig, "seq_length", -3, "--seq_length"),
        (LayoutConfig, "val_fraction", 1.0, "--val_fraction must be in [0, 1)"),
        (ModelConfig, "rnn_units", 0, "--rnn_units"),
        (ModelConfig, "num_layers", 0, "--num_layers"),
        (ModelConfig, "embedding_dim", 0, "--embedding_dim"),
        (ModelConfig, "dropout", 1.0, "--dropout must be in [0, 1)"),
        (ModelConfig, "embedding_dropout", 1.0, "--embedding_dropout must be in [0, 1)"),
        (ModelConfig, "embedding_dropout", -0.1, "--embedding_dropout must be in [0, 1)"),
        (ModelConfig, "cell", "transformer", "--cell must be one of lstm, gru, rnn"),
        (OptimizationConfig, "learning_rate", 0.0, "--learning_rate must be > 0"),
        (OptimizationConfig, "grad_clip", 0.0, "--grad_clip must be > 0"),
        (OptimizationConfig, "adam_epsilon", 0.0, "--adam_epsilon must be > 0"),
        (OptimizationConfig, "adam_epsilon_form", "optax", "--adam_epsilon_form must be one of keras"),
        (OptimizationConfig, "adam_beta2", 1.0, "--adam_beta2 must be in (0, 1)"),
        (OptimizationConfig, "weight_decay", -0.1, "--weight_decay must be >= 0"),
        (OptimizationConfig, "weight_decay", float("nan"), "--weight_decay must be >= 0"),
        (OptimizationConfig, "ema_decay", 1.0, "--ema_decay must be in [0, 1)"),
        (OptimizationConfig, "ema_decay", -0.5, "--ema_decay must be in [0, 1)"),
        (OptimizationConfig, "dropout_from_step", -1, "--dropout_from_step must be an integer >= 0"),
        (OptimizationConfig, "state_reset_probability", 1.0, "--state_reset_probability must be in [0, 1)"),
        (OptimizationConfig, "state_reset_probability", -0.1, "--state_reset_probability must be in [0, 1)"),
        (ModelConfig, "embedding_initializer", "zeros", "--embedding_initializer must be one of normal"),
        (ModelConfig, "weight_initializer", "xavier", "--weight_initializer must be one of pytorch, keras"),
        (OptimizationConfig, "lr_schedule", "step", "--lr_schedule"),
        (CadenceConfig, "eval_every", 0, "--eval_every"),
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


def test_a_config_json_with_the_run_directory_under_length_still_loads():
    # Written before the directory section: train_dir and init_from were length's fields.
    values = RunConfig().to_dict()
    del values["directory"]
    values["length"].update(train_dir="runs/old", init_from="runs/older")
    config = RunConfig.from_dict(values)
    assert (config.directory.train_dir, config.directory.init_from) == ("runs/old", "runs/older")
    assert config.length == RunConfig().length


def test_a_config_written_before_the_initialisers_were_recorded_keeps_what_its_run_had():
    # Runs written before issue 29 drew their embedding U(-0.05, 0.05), Keras' default, and carried every
    # stream's state; a new run draws it N(0, 1), PyTorch's, and starts a tenth of its streams' batches
    # from a zero state, unless told otherwise. The other weights and Adam keep Keras' defaults.
    values = RunConfig(model=ModelConfig(vocab_size=65)).to_dict()
    for section, name in [
        ("model", "embedding_initializer"),
        ("model", "weight_initializer"),
        ("optimization", "adam_epsilon"),
        ("optimization", "adam_beta2"),
        ("optimization", "adam_epsilon_form"),
        ("optimization", "state_reset_probability"),
        ("optimization", "weight_decay"),
        ("optimization", "ema_decay"),
        ("optimization", "dropout_from_step"),
        ("model", "skip_connections"),
    ]:
        del values[section][name]
    old = RunConfig.from_dict(values)
    assert (old.model.embedding_initializer, old.model.weight_initializer) == ("uniform", "keras")
    assert (old.optimization.adam_epsilon, old.optimization.state_reset_probability) == (1e-7, 0.0)
    assert (old.optimization.adam_epsilon_form, old.optimization.adam_beta2) == ("keras", 0.999)
    assert old.optimization.weight_decay == old.optimization.ema_decay == 0.0
    assert old.optimization.dropout_from_step == 0
    assert old.model.skip_connections is False
    new = RunConfig()
    assert (new.model.embedding_initializer, new.model.weight_initializer) == ("normal", "keras")
    assert (new.optimization.adam_epsilon, new.optimization.state_reset_probability) == (1e-7, 0.1)
    assert RunConfig.from_dict(new.to_dict()) == new


def test_flat_values_reach_their_sections():
    config = RunConfig.from_flat({"batch_size": 3, "rnn_units": 32, "max_steps": 7, "strategy": "default"})
    assert (config.layout.batch_size, config.model.rnn_units, config.length.max_steps) == (3, 32, 7)
    assert config.runtime.strategy == "default" and config.optimization == RunConfig().optimization
    assert RunConfig.from_flat(config.flat()) == config
    changed = config.replace(learning_rate=0.5, seq_length=9)
    assert (changed.optimization.learning_rate, changed.layout.seq_length) == (0.5, 9)
    assert changed.replace(learning_rate=config.optimization.learning_rate, seq_length=100) == config
    with pytest.raises(UserError, match="units"):
        RunConfig.from_flat({"units": 3})
    with pytest.raises(UserError, match="--batch_size must be an integer >= 1"):
        config.replace(batch_size=0)


_PARSE_FLAGFILE = """
import json, sys
from absl import flags
from tf_charrnn.cli import flags as cli_flags
from tf_charrnn.config import RunConfig
cli_flags.define_flags(RunConfig)
flags.FLAGS(["train.py", "--flagfile=" + sys.argv[1]])
print(json.dumps(cli_flags.config_from_flags(RunConfig).flat()))
"""


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(REPO_ROOT, "configs"))))
def test_every_shipped_config_parses_into_a_valid_run_config(name):
    path = os.path.join(REPO_ROOT, "configs", name)
    parsed = subprocess.run(
        [sys.executable, "-c", _PARSE_FLAGFILE, path], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert parsed.returncode == 0, parsed.stderr
    values = json.loads(parsed.stdout)
    with open(path, encoding="utf-8") as f:
        given = dict(line.strip()[2:].split("=", 1) for line in f if line.startswith("--"))
    assert given
    for key, text in given.items():  # every line of the file reached the config
        value = values[key]
        if isinstance(value, bool) or isinstance(value, str):
            assert str(value).lower() == text.lower(), (key, value, text)
        else:
            assert value == pytest.approx(float(text)), (key, value, text)


def test_a_continued_run_takes_its_runtime_from_the_launch_and_the_rest_from_the_run():
    recorded = RunConfig.from_flat(
        dict(strategy="multi_worker", jit_compile=True, deterministic=True, tpu="grpc://x", rnn_units=64)
    )
    launch = RunConfig.from_flat(dict(strategy="default", max_steps=30))  # what this command says
    continued = recorded.continued_by(launch, {"max_steps": 30})
    assert continued.runtime == launch.runtime  # given or default, never the recorded launch's
    assert (continued.model.rnn_units, continued.length.max_steps) == (64, 30)


def test_escaped_flag_text():
    assert unescape(r"a\n\tb\\n", "stop_at") == "a\n\tb\\n"
    assert escape("\n\n") == r"\n\n" and unescape(escape("x\\y\r"), "x") == "x\\y\r"
    with pytest.raises(UserError, match=r"--stop_at has an unknown escape \\q; write \\n for a newline"):
        unescape(r"\q", "stop_at")
