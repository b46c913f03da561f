"""Training and inference compute the same model: on the same batch and the same incoming recurrent state,
with dropout 0, the loss a training step logs equals validation's and the loss through `step` (sampling's
and export's path), for every recurrent implementation this machine runs, also after a checkpoint round
trip; and a run that only predicts well from the state training carried says so (issue 25)."""

import dataclasses
import logging
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from helpers import SMOKE_CONFIG, make_config, train_tiny_run
from tf_charrnn.config import RunConfig
from tf_charrnn.data.splits import Splits
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.inference.sampling import Sampler
from tf_charrnn.model import losses, native
from tf_charrnn.model.char_rnn import CharRNN
from tf_charrnn.run import checkpoints, layout
from tf_charrnn.runtime import placement
from tf_charrnn.training.train_step import streams_kept
from tf_charrnn.training.trainer import Trainer, train

VOCAB = Vocab(list("abcdefghijkl"))
BATCH, TIME, UNITS = 4, 8, 64  # 64 units: the fused kernels apply
# What the reproduction's run reached at step 100 (2 x 256 LSTM, lr 0.01): |c| up to 5,391, h at +-1.
LARGE_CELL_STATE = 5000.0
WEIGHT_SCALE = 3.0  # the "scaled" weights: every weight times this, so that the gates saturate

# name: (--mixed_precision, whether the LSTM runs on the fused kernels). GRU and RNN have no kernels; they
# run in float32 here (their bfloat16 is Keras' own, like the LSTM's "keras bfloat16").
IMPLEMENTATIONS = {
    "fused float32": ("none", True),
    "fused bfloat16": ("bfloat16", True),
    "keras float32": ("none", False),
    "keras bfloat16": ("bfloat16", False),
}
CASES = [
    (cell, implementation)
    for cell in ("lstm", "gru", "rnn")
    for implementation in IMPLEMENTATIONS
    if cell == "lstm" or implementation == "keras float32"
]


def _trainer(tmp_path, cell, implementation, **settings):
    """A Trainer of a tiny run in tmp_path/run on the implementation (and any other `settings`), or a skip
    where it cannot run."""
    mixed_precision, fused = IMPLEMENTATIONS[implementation]
    if fused and native.load() is None:
        pytest.skip("the fused kernels cannot be built here")
    if fused and mixed_precision == "bfloat16" and not native.bfloat16_kernels():
        pytest.skip("no bfloat16 fused kernels here (no AVX512-BF16)")
    config = RunConfig.from_flat(
        dict(
            vocab_size=len(VOCAB),
            embedding_dim=8,
            rnn_units=UNITS,
            num_layers=2,
            dropout=0.0,
            cell=cell,
            batch_size=BATCH,
            seq_length=TIME,
            mixed_precision=mixed_precision,
            strategy="default",
            seed=1,
            train_dir=str(tmp_path / "run"),
            **settings,
        )
    )
    runtime = placement.resolve(config)
    if not fused:
        runtime = dataclasses.replace(runtime, fused_kernels=False, bfloat16_kernels=False)
    ids = np.random.default_rng(0).integers(0, len(VOCAB), 2 * BATCH * TIME + 1).astype(np.int32)
    splits = Splits(VOCAB, ids, ids, "", 0, ())
    layout.save_run(config, VOCAB)
    trainer = Trainer(config, splits, runtime)
    on_kernels = [
        cell == "lstm" and layer._kernels(None) is not None for layer in trainer.model.recurrent_layers
    ]
    assert on_kernels == [fused] * 2  # the implementation the case names
    return trainer


def _scale_weights(model):
    model.set_weights([weight * WEIGHT_SCALE for weight in model.get_weights()])


def _incoming_state(model, weights, seed=2):
    """A state for every state variable: LSTM h in (-1, 1) and c as large as the run's, or as small as
    random weights give; GRU and RNN h in (-1, 1)."""
    rng = np.random.default_rng(seed)
    scale = LARGE_CELL_STATE if weights == "scaled" else 2.0
    state = []
    for layer in model.recurrent_layers:
        shape = (BATCH, layer.units)
        state.append(rng.uniform(-1.0, 1.0, shape).astype(np.float32))
        if layer.num_states == 2:
            state.append(rng.uniform(-scale, scale, shape).astype(np.float32))
    return state


def _set_state(model, state):
    for variable, value in zip(model.state_variables, state, strict=True):
        variable.assign(value)


def _step_loss(model, state, inputs, targets):
    """The sequence loss through `step`, one character at a time from `state` (the state variables' order)."""
    layers, index = [], 0
    for layer in model.recurrent_layers:
        layers.append(tf.stack(state[index : index + layer.num_states]))
        index += layer.num_states
    packed, weights, logits = tf.stack(layers), model.step_weights(), []
    for t in range(inputs.shape[1]):
        step_logits, packed = model.step(tf.constant(inputs[:, t]), packed, weights)
        logits.append(step_logits)
    return float(losses.sequence_loss(tf.constant(targets), tf.stack(logits, axis=1)))


def _batch(seed=3):
    ids = np.random.default_rng(seed).integers(0, len(VOCAB), (BATCH, TIME + 1)).astype(np.int32)
    return ids[:, :-1], ids[:, 1:]


@pytest.mark.parametrize("cell, implementation", CASES)
def test_training_validation_and_step_losses_agree_also_after_a_checkpoint(tmp_path, cell, implementation):
    trainer = _trainer(tmp_path, cell, implementation)
    model, steps, config = trainer.model, trainer.steps, trainer.config
    inputs, targets = _batch()
    # bfloat16 runs its products in bfloat16, so the order of its roundings shows: `step` (sampling,
    # export) always runs in float32, evaluate.py's model does not unroll the time loop.
    precision = 2e-2 if IMPLEMENTATIONS[implementation][0] == "bfloat16" else 1e-5
    sampler = Sampler(config.model, trainer.runtime.fused_kernels)
    # evaluate.py's model and sample.py's, which load a checkpoint's weights
    evaluation_model = CharRNN(
        config.model,
        batch_size=BATCH,
        dtype_policy=trainer.runtime.dtype_policy,
        fused_kernels=trainer.runtime.fused_kernels,
    )
    restored_sampler = Sampler(config.model, trainer.runtime.fused_kernels)
    for weights in ("random", "scaled"):
        if weights == "scaled":
            _scale_weights(model)
            trainer.position.step += 1  # a checkpoint of the next step (the run has this one)
        state = _incoming_state(model, weights)

        _set_state(model, state)
        validation = float(steps.evaluate(inputs, targets))
        _set_state(model, state)
        checkpoint = trainer.save()  # holds the incoming state as the training state
        _set_state(model, state)
        training = float(steps.train(inputs, targets, 0.0)["loss"])  # rate 0: the weights stay
        sampler.model.copy_weights_from(model)  # as training's own samples do
        through_step = _step_loss(sampler.model, state, inputs, targets)
        np.testing.assert_allclose(training, validation, rtol=1e-6, err_msg=weights)
        np.testing.assert_allclose(through_step, training, rtol=precision, err_msg=weights)

        checkpoints.restore_weights(config.directory.train_dir, evaluation_model, checkpoint)
        _set_state(evaluation_model, state)
        restored_validation = float(losses.sequence_loss(targets, evaluation_model(inputs, training=False)))
        checkpoints.restore_weights(config.directory.train_dir, restored_sampler.model, checkpoint)
        restored_step = _step_loss(restored_sampler.model, state, inputs, targets)
        np.testing.assert_allclose(restored_validation, validation, rtol=precision, err_msg=weights)
        np.testing.assert_allclose(restored_step, through_step, rtol=1e-6, err_msg=weights)
        # The training state the checkpoint carries (a resumed run continues from it: test_resume.py).
        reader = tf.train.load_checkpoint(checkpoint)
        for index, value in enumerate(state):
            saved = reader.get_tensor(f"recurrent_state/{index}/.ATTRIBUTES/VARIABLE_VALUE")
            np.testing.assert_array_equal(saved, value)
    trainer.checkpoints.close()


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_validation_in_one_call_gives_each_batch_the_one_batch_steps_loss_bit_for_bit(
    tmp_path, implementation
):
    # Trainer.validation_losses scores every batch in one compiled loop (TrainStep.evaluate_batches); each
    # batch's loss is what the one-batch evaluation step gives with the state carried, to the last bit,
    # from a zero state and from training's, and training's state is left as it was.
    trainer = _trainer(tmp_path, "lstm", implementation)
    model, steps = trainer.model, trainer.steps
    state = _incoming_state(model, "random")
    _set_state(model, state)
    in_one_call = trainer.validation_losses()
    from_carried = trainer.validation_losses(from_carried_state=True, batches=1)
    for variable, value in zip(model.state_variables, state, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)
    model.reset_state()
    one_by_one = [float(steps.evaluate(inputs, targets)) for inputs, targets in trainer.batches.validation]
    _set_state(model, state)
    batches = iter(trainer.batches.validation)
    carried_one_by_one = [float(steps.evaluate(*next(batches)))]
    assert len(in_one_call) == trainer.batches.val_batches == 2  # the state crosses a batch boundary
    assert in_one_call == one_by_one
    assert from_carried == carried_one_by_one and from_carried != in_one_call[:1]


@pytest.mark.parametrize("implementation", ["fused float32", "keras float32"])
def test_streams_drawn_for_a_reset_start_the_training_step_from_a_zero_state(tmp_path, implementation):
    # --state_reset_probability: the step zeroes the drawn streams' state before the forward pass; the
    # draw depends on the seed and the step only, so a resumed run draws the same.
    trainer = _trainer(tmp_path, "lstm", implementation, state_reset_probability=0.5)
    model, steps = trainer.model, trainer.steps
    inputs, targets = _batch()
    state = _incoming_state(model, "random")
    draws = [streams_kept(1, step, BATCH, 0.5) for step in range(2)]
    assert np.array_equal(draws[0], streams_kept(1, 0, BATCH, 0.5))  # the seed and the step decide
    assert not np.array_equal(draws[0], draws[1])
    assert streams_kept(-1, 0, 64, 0.5).shape == (64,)  # any --seed, negative too
    for step in (0, 1):
        keep = draws[step][:, np.newaxis]
        assert 0 < keep.sum() < BATCH, "the test needs kept and reset streams"
        _set_state(model, [value * keep for value in state])
        expected = float(steps.evaluate(inputs, targets))
        _set_state(model, state)
        carried = float(steps.evaluate(inputs, targets))
        _set_state(model, state)
        training = float(steps.train(inputs, targets, 0.0, step=step)["loss"])  # rate 0: the weights stay
        np.testing.assert_allclose(training, expected, rtol=1e-6)
        assert abs(training - carried) > 1e-3  # the incoming state matters to this batch
    trainer.checkpoints.close()


def _smoke_learning_rate():
    with open(SMOKE_CONFIG, encoding="utf-8") as f:
        return float(re.search(r"^--learning_rate=(\S+)$", f.read(), re.MULTILINE).group(1))


# What issue 25's run had: Keras' embedding U(-0.05, 0.05) (issue 29 made PyTorch's N(0, 1) the default,
# under which lr 0.01 learns) and every stream's state carried from batch to batch.
ISSUE_25_SETTINGS = dict(embedding_initializer="uniform", state_reset_probability=0.0)


def _reproduction(shakespeare_cache, tmp_path, learning_rate, caplog, steps=30, **settings):
    """Issue 25's run, shortened: smoke.cfg's model at 256 units, batch 32 x 64, `steps` steps, validated
    once on 2% of tiny-shakespeare. Returns (mean training loss of the last 10 steps, val loss, warnings)."""
    config = make_config(
        "",
        shakespeare_cache,
        tmp_path / f"run_{learning_rate}_{len(settings)}",
        embedding_dim=8,
        rnn_units=256,
        num_layers=2,
        dropout=0.0,
        batch_size=32,
        seq_length=64,
        val_fraction=0.02,
        learning_rate=learning_rate,
        max_steps=steps,
        eval_every=steps,
        sample_length=0,
        strategy="default",
        seed=1,
        **settings,
    )
    with caplog.at_level(logging.WARNING):
        result = train(config)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    caplog.clear()
    return float(np.mean(result.losses[-10:])), result.best_val_loss, warnings


@pytest.mark.slow
def test_a_run_that_predicts_only_from_its_carried_state_says_so(shakespeare_cache, tmp_path, caplog):
    # lr 0.01 without warmup on Keras' embedding: the LSTM cell state grows by about one per character
    # and the model predicts from it; validation, which starts from a zero state, is far worse than training.
    train_loss, val_loss, warnings = _reproduction(
        shakespeare_cache, tmp_path, 0.01, caplog, **ISSUE_25_SETTINGS
    )
    assert val_loss - train_loss > 1.0, (train_loss, val_loss)
    [warning] = [message for message in warnings if "zero state" in message]
    assert "lower --learning_rate (now 0.01; e.g. 0.002)" in warning
    assert f"Validation loss {val_loss:.2f}" in warning
    # The smoke config's rate: validation where training is, and nothing to warn about.
    train_loss, val_loss, warnings = _reproduction(
        shakespeare_cache, tmp_path, _smoke_learning_rate(), caplog
    )
    assert abs(val_loss - train_loss) < 0.3, (train_loss, val_loss)
    assert not [message for message in warnings if "zero state" in message]


def _unigram_loss(text, val_fraction):
    """Nats per character of the validation split under the training split's character frequencies
    (add-one smoothed): the loss of a model that has learned no context at all."""
    split = int(len(text) * (1 - val_fraction))
    train_text, val_text = text[:split], text[split:]
    chars = sorted(set(text))
    counts = np.array([train_text.count(char) + 1 for char in chars], dtype=np.float64)
    log_probs = dict(zip(chars, np.log(counts / counts.sum()), strict=True))
    return -float(np.mean([log_probs[char] for char in val_text]))


@pytest.mark.slow
def test_the_default_initialisers_learn_at_a_high_learning_rate(shakespeare_cache, tmp_path, caplog):
    # Issue 29: at Adam 0.01, where Keras' initialisers land in the carried-state regime (above), the
    # default embedding (PyTorch's scale) learns: validation where training is, both below a unigram model.
    train_loss, val_loss, warnings = _reproduction(shakespeare_cache, tmp_path, 0.01, caplog, steps=60)
    with open(os.path.join(shakespeare_cache, "data", "tinyshakespeare", "input.txt"), encoding="utf-8") as f:
        unigram = _unigram_loss(f.read(), 0.02)
    assert abs(val_loss - train_loss) < 0.2, (train_loss, val_loss)
    assert max(train_loss, val_loss) < unigram - 0.2, (train_loss, val_loss, unigram)
    assert not [message for message in warnings if "zero state" in message]


def test_a_gap_the_incoming_state_does_not_explain_is_not_blamed_on_it(tmp_path, monkeypatch, caplog):
    # Validation far above training, as overfitting gives, on a model that predicts alike from a zero
    # state and from training's: the check scores both and stays silent.
    monkeypatch.setattr(Trainer, "evaluate", lambda self: 10.0)
    scored = []
    validation_losses = Trainer.validation_losses

    def spy(self, from_carried_state=False, batches=None):
        scored.append(from_carried_state)
        return validation_losses(self, from_carried_state, batches)

    monkeypatch.setattr(Trainer, "validation_losses", spy)
    with caplog.at_level(logging.WARNING):
        train_tiny_run(tmp_path, rnn_units=64, embedding_dim=8)
    assert scored == [False, True]  # the check ran once, from a zero state and from training's
    assert "zero state" not in caplog.text
