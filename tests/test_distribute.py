"""Training under tf.distribute: MirroredStrategy on two logical CPUs (see conftest), mixed precision."""

import functools
import types

import numpy as np
import pytest
import tensorflow as tf

from helpers import QUOTE, make_config
from tf_charrnn.data import pipeline
from tf_charrnn.errors import UserError
from tf_charrnn.runtime import distribute
from tf_charrnn.training import trainer

# A small run on `corpus`: 4 streams of 8 characters (2 per replica under mirrored), random offsets.
_config = functools.partial(
    make_config,
    batch_size=4,
    seq_length=8,
    random_offset=True,
    embedding_dim=8,
    rnn_units=64,
    num_layers=2,
    dropout=0.0,
    max_steps=8,
    eval_every=3,
    ckpt_every=4,
    log_every=1,
    sample_length=0,
    learning_rate=0.01,
)


def _recurrent_state(checkpoint):
    reader = tf.train.load_checkpoint(checkpoint)
    names = sorted(name for name in reader.get_variable_to_shape_map() if name.startswith("recurrent_state/"))
    return [reader.get_tensor(name) for name in names]


@pytest.fixture
def corpus(text_file):
    return text_file((QUOTE + " ") * 12)  # 876 chars: 24 batches of 4 x 8 per epoch at 0.1 val


def test_the_test_session_has_two_logical_cpus():
    strategy = distribute.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2


def test_mirrored_training_matches_the_default_strategy(corpus, corpus_cache, tmp_path):
    # Every state carried, as this test was written for (resets: the next test).
    config = functools.partial(_config, corpus, corpus_cache, state_reset_probability=0.0)
    single = trainer.train(config(tmp_path / "default", strategy="default"))
    mirrored = trainer.train(config(tmp_path / "mirrored", strategy="mirrored"))
    assert len(mirrored.losses) == 8
    np.testing.assert_allclose(mirrored.losses, single.losses, rtol=0, atol=1e-5)
    assert mirrored.best_val_loss == pytest.approx(single.best_val_loss, abs=1e-5)
    # Each replica continued its own two streams: the gathered [4, H] states match one device's.
    assert mirrored.last_checkpoint.endswith("ckpt-8")
    states = _recurrent_state(mirrored.last_checkpoint)
    assert len(states) == 4 and states[0].shape == (4, 64)
    for got, want in zip(states, _recurrent_state(single.last_checkpoint), strict=True):
        assert np.abs(want[:2] - want[2:]).max() > 1e-3  # the two halves hold different streams
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_streams_reset_to_a_zero_state_are_the_same_on_any_number_of_replicas(corpus, corpus_cache, tmp_path):
    config = functools.partial(_config, corpus, corpus_cache, state_reset_probability=0.5)
    single = trainer.train(config(tmp_path / "default", strategy="default"))
    mirrored = trainer.train(config(tmp_path / "mirrored", strategy="mirrored"))
    np.testing.assert_allclose(mirrored.losses, single.losses, rtol=0, atol=1e-5)
    # The gathered states too (cell states reach 8 here: float32 sums over replicas differ at 1e-6 of them).
    for got, want in zip(
        _recurrent_state(mirrored.last_checkpoint), _recurrent_state(single.last_checkpoint), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    carried = trainer.train(
        _config(corpus, corpus_cache, tmp_path / "carried", strategy="default", state_reset_probability=0.0)
    )
    assert np.abs(np.array(single.losses) - carried.losses).max() > 1e-3  # the resets changed the run


def test_a_mirrored_run_resumes_on_one_device(corpus, corpus_cache, tmp_path):
    uninterrupted = trainer.train(_config(corpus, corpus_cache, tmp_path / "one", strategy="default"))
    config = _config(corpus, corpus_cache, tmp_path / "moved", strategy="mirrored")
    first = trainer.train(config.replace(max_steps=5))  # stops mid-epoch, after an evaluation
    second = trainer.train(config.replace(strategy="default"))
    np.testing.assert_allclose(first.losses + second.losses, uninterrupted.losses, rtol=0, atol=1e-5)


def test_replicas_must_divide_the_global_batch(corpus, corpus_cache, tmp_path):
    config = _config(
        corpus, corpus_cache, tmp_path / "odd", strategy="mirrored", batch_size=3, random_offset=False
    )
    with pytest.raises(
        UserError, match="--batch_size 3 does not divide among 2 replicas; use a multiple of 2"
    ):
        trainer.train(config)


def test_each_replica_receives_its_own_contiguous_streams():
    ids = np.arange(200, dtype=np.int32)
    strategy = distribute.make_strategy("mirrored")
    layout = pipeline.stream_dataset(ids, 4, 5, 3)
    distributed = distribute.distribute_streams(
        strategy,
        4,
        lambda first_row, num_rows: pipeline.stream_dataset(
            ids, 4, 5, 3, first_row=first_row, num_rows=num_rows
        ),
    )
    batches = 0
    for (inputs, targets), (replica_inputs, replica_targets) in zip(layout, distributed, strict=True):
        local_inputs = strategy.experimental_local_results(replica_inputs)
        local_targets = strategy.experimental_local_results(replica_targets)
        np.testing.assert_array_equal(np.concatenate(local_inputs), inputs)
        np.testing.assert_array_equal(np.concatenate(local_targets), targets)
        batches += 1
    assert batches == 3


@pytest.mark.parametrize("mixed_precision", ["bfloat16", "float16"])
def test_mixed_precision_training_learns(mixed_precision, corpus, corpus_cache, tmp_path):
    config = _config(
        corpus,
        corpus_cache,
        tmp_path / mixed_precision,
        mixed_precision=mixed_precision,
        max_steps=60,
        learning_rate=0.02,
    )
    result = trainer.train(config)
    assert np.isfinite(result.losses).all()
    # float32 goes from 2.99 to 1.79 here; the vocabulary's uniform loss is log(21) = 3.04.
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5]) - 0.9
    # The checkpoint's recurrent state stays float32, whatever the compute precision.
    assert all(value.dtype == np.float32 for value in _recurrent_state(result.last_checkpoint))


def test_mixed_precision_is_part_of_the_run(corpus, corpus_cache, tmp_path):
    config = _config(corpus, corpus_cache, tmp_path / "run", max_steps=2)
    trainer.train(config)
    with pytest.raises(UserError, match="mixed_precision 'none' -> 'float16'"):
        trainer.train(config.replace(mixed_precision="float16", max_steps=4))


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="--strategy=multi_worker needs TF_CONFIG"):
        distribute.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UserError, match="TF_CONFIG is not valid JSON"):
        distribute.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "5")
    with pytest.raises(UserError, match="--strategy=multi_worker needs TF_CONFIG"):
        distribute.make_strategy("multi_worker")


def test_xla_compiles_the_whole_step_on_one_device_and_each_replica_step_under_mirrored(
    corpus, corpus_cache, tmp_path
):
    # The default run steps its LSTMs on the fused kernels, which XLA cannot compile: with
    # --jit_compile the layers fall back to Keras' LSTM and train to the same losses.
    on_kernels = trainer.train(
        _config(corpus, corpus_cache, tmp_path / "kernels", strategy="default", max_steps=4)
    )
    for strategy in ["default", "mirrored"]:
        compiled = trainer.train(
            _config(
                corpus,
                corpus_cache,
                tmp_path / f"xla_{strategy}",
                strategy=strategy,
                jit_compile=True,
                max_steps=4,
            )
        )
        np.testing.assert_allclose(compiled.losses, on_kernels.losses, rtol=0, atol=1e-4, err_msg=strategy)


def _three_workers(task_id):
    """A stand-in for a MultiWorkerMirroredStrategy of three workers, as worker `task_id` sees it."""
    cluster = {"worker": ["10.0.0.1:2222", "10.0.0.2:2222", "10.0.0.3:2222"]}
    spec = tf.train.ClusterSpec(cluster)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(spec, task_type="worker", task_id=task_id)
    return types.SimpleNamespace(cluster_resolver=resolver)


def test_a_lost_worker_is_the_one_whose_heartbeats_stopped(tmp_path):
    # As worker 2 hears it: worker 0 (alive) reports that worker 1 stopped sending heartbeats.
    error = tf.errors.UnavailableError(
        None,
        None,
        "Collective ops is aborted by: Error reported from /job:worker/task:0: The following tasks are "
        "unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed.",
    )
    message = str(distribute.lost_worker_error(_three_workers(2), error, str(tmp_path)))
    checkpoints = tmp_path / "checkpoints"
    assert message == (
        f"worker 1 (10.0.0.2:2222) stopped answering, so worker 2 (this one) stopped too; the run will "
        f"resume from its start (no checkpoint in {checkpoints} yet): re-run every worker's command (all 3 "
        f"of them) to resume"
    )
    # A message that names no task: the line lists the others.
    silent = tf.errors.CancelledError(None, None, "")
    message = str(distribute.lost_worker_error(_three_workers(0), silent, str(tmp_path)))
    assert message.startswith(
        "another worker (one of worker 1 (10.0.0.2:2222), worker 2 (10.0.0.3:2222)) stopped answering"
    )
