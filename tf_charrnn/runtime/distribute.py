"""Distribution: choosing a tf.distribute strategy, handing each replica its streams, moving its state.

Stateful TBPTT under a strategy: the global batch of B streams is cut into R replicas of B/R
contiguous streams each (replica r holds rows [r*B/R, (r+1)*B/R) of the stream layout). Each replica's
stateful layers keep their own [B/R, H] state across steps; `gather_states` and `scatter_states`
move it to and from [B, H] global tensors, which is what checkpoints hold, so a run resumes on any
number of replicas that divides B.
"""

import functools
import os
import re
from collections.abc import Callable, Sequence

import tensorflow as tf

from tf_charrnn.config import LayoutConfig
from tf_charrnn.data import pipeline
from tf_charrnn.data.splits import Splits, num_stream_batches
from tf_charrnn.errors import UserError, first_line, flag
from tf_charrnn.run import checkpoints, layout
from tf_charrnn.runtime import tf_config


@functools.cache
def make_strategy(name: str, tpu: str = "") -> tf.distribute.Strategy:
    """The tf.distribute strategy named by --strategy.

    auto: MirroredStrategy over the visible GPUs when there are several, else the default strategy.
    mirrored: MirroredStrategy over the visible GPUs, or over the logical CPU devices when there is
    no GPU (one unless tf.config.set_logical_device_configuration split the CPU).
    multi_worker: MultiWorkerMirroredStrategy configured by the TF_CONFIG environment variable; it
    must be created before TensorFlow runs any op, so call this first.
    tpu: TPUStrategy on the TPU named by `tpu` ("" for a local or Cloud TPU VM).

    One strategy per name and process: a second MirroredStrategy would reuse the first one's
    collective keys.
    """
    if name == "auto":
        name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy(
            [device.name for device in tf.config.list_logical_devices("CPU")]
        )
    if name == "multi_worker":
        tf_config.check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError, RuntimeError) as error:
            raise UserError(
                f"{flag('strategy')}=tpu found no TPU ({first_line(error)}); "
                f"run on a TPU VM or pass {flag('tpu')}=NAME_OR_GRPC_ADDRESS"
            ) from None
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}")


# The errors a collective or the coordination service raises when a peer stops answering.
PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)
_TASK = re.compile(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)")


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def lost_worker_error(strategy: tf.distribute.Strategy, error: BaseException, train_dir: str) -> UserError:
    """The UserError for a collective that failed because another worker stopped answering: which worker
    (its task and address, from `error`'s message and the cluster), the checkpoint the run resumes from,
    and that re-running every worker's command resumes.

    Args:
      strategy: the MultiWorkerMirroredStrategy.
      error: the tf.errors.OpError the collective raised (one of PEER_ERRORS).
      train_dir: the run directory (the chief's), whose newest checkpoint the run resumes from.
    """
    resolver = strategy.cluster_resolver
    cluster = resolver.cluster_spec().as_dict()
    me = (resolver.task_type, int(resolver.task_id))
    tasks = [(job, index) for job, addresses in cluster.items() for index in range(len(addresses))]
    others = [task for task in tasks if task != me]
    # The coordination service lists the tasks whose heartbeats stopped after "unhealthy" (the task
    # named before it only reported them).
    message = str(error)
    message = message[message.find("unhealthy") :] if "unhealthy" in message else message
    named = []
    for job, index in ((job, int(index)) for job, index in _TASK.findall(message)):
        if (job, index) in others and (job, index) not in named:
            named.append((job, index))
    lost = named or (others if len(others) == 1 else [])

    def describe(tasks: list[tuple[str, int]]) -> str:
        return ", ".join(f"{job} {index} ({cluster[job][index]})" for job, index in tasks)

    who = describe(lost) if lost else f"another worker (one of {describe(others)})"
    return UserError(
        f"{who} stopped answering, so {me[0]} {me[1]} (this one) stopped too; the run will resume from "
        f"{_newest_checkpoint(train_dir)}: re-run every worker's command (all {len(others) + 1} of them) "
        f"to resume"
    )


def _newest_checkpoint(train_dir: str) -> str:
    """The newest checkpoint of the run directory, for a message."""
    directory = layout.checkpoint_dir(train_dir)
    try:
        paths = checkpoints.checkpoint_paths(directory)
    except UserError:
        paths = []
    present = [path for path in paths if os.path.isfile(path + ".index")]
    if not present:
        return f"its start (no checkpoint in {directory} yet)"
    return os.path.join(directory, os.path.basename(present[-1]))


def is_default(strategy: tf.distribute.Strategy) -> bool:
    """True for TensorFlow's default (single-device, no-op) strategy."""
    return strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints, logs and exports: always, except a non-chief worker."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    if resolver.task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def replica_batch_size(strategy: tf.distribute.Strategy, global_batch_size: int) -> int:
    """The streams each replica holds; raises UserError unless the replicas divide the global batch."""
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise UserError(
            f"{flag('batch_size')} {global_batch_size} does not divide among {replicas} replicas; "
            f"use a multiple of {replicas}"
        )
    return global_batch_size // replicas


def distribute_streams(
    strategy: tf.distribute.Strategy,
    global_batch_size: int,
    make_dataset: Callable[[int, int], tf.data.Dataset],
) -> tf.distribute.DistributedDataset:
    """Distributes a stream-layout dataset so that each replica receives its own contiguous rows.

    Args:
      strategy: the tf.distribute strategy.
      global_batch_size: B, the streams of the whole layout.
      make_dataset: (first_row, num_rows) -> tf.data.Dataset whose elements are tuples of tensors,
        the batched ones [num_rows, ...] and the rest scalars shared by every row.

    Returns:
      A distributed dataset whose per-replica elements hold rows [r*b, (r+1)*b) of the layout,
      b = B / replicas, for replica r.
    """
    replica_batch = replica_batch_size(strategy, global_batch_size)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        first_row = context.input_pipeline_id * local_replicas * replica_batch
        dataset = make_dataset(first_row, local_replicas * replica_batch)

        def per_replica(*parts: tf.Tensor) -> tuple[tf.Tensor, ...]:
            return tuple(
                tf.reshape(part, [local_replicas, replica_batch, *part.shape[1:]])
                if part.shape.rank
                else tf.fill([local_replicas], part)
                for part in parts
            )

        # Consecutive elements go to consecutive local replicas.
        return dataset.map(tf.autograph.experimental.do_not_convert(per_replica)).unbatch()

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(dataset_fn, options)


def gather_states(
    strategy: tf.distribute.Strategy, states: Sequence[tf.Variable], global_states: Sequence[tf.Variable]
) -> None:
    """Copies every replica's [b, H] state into its rows of the [B, H] `global_states` (a collective)."""
    per_replica = strategy.run(lambda: [tf.identity(state) for state in states])
    for value, target in zip(per_replica, global_states, strict=True):
        target.assign(strategy.gather(value, axis=0))


def scatter_states(
    strategy: tf.distribute.Strategy, states: Sequence[tf.Variable], global_states: Sequence[tf.Variable]
) -> None:
    """Sets every replica's [b, H] state from its rows of the [B, H] `global_states`."""

    def assign() -> None:
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        for state, value in zip(states, global_states, strict=True):
            rows = state.shape[0]
            state.assign(value[replica * rows : (replica + 1) * rows])

    strategy.run(assign)


class GlobalState:
    """The recurrent state of all B streams, as checkpoints hold it: one [B, H] variable per state
    variable of the model, whose [b, H] per-replica copies the replicas carry.

    Args:
      strategy: the tf.distribute strategy.
      states: the model's state variables, [b, H] each on every replica.
      batch_size: B.
    """

    def __init__(
        self, strategy: tf.distribute.Strategy, states: Sequence[tf.Variable], batch_size: int
    ) -> None:
        self.variables = [
            tf.Variable(tf.zeros([batch_size, *state.shape[1:]], state.dtype), trainable=False)
            for state in states
        ]
        self.gather = tf.function(lambda: gather_states(strategy, states, self.variables), autograph=False)
        self.scatter = tf.function(lambda: scatter_states(strategy, states, self.variables), autograph=False)


class RunBatches:
    """A training run's batches under a strategy: the training stream layout from any data position,
    epoch after epoch, and one pass over the validation split.

    Args:
      strategy: the tf.distribute strategy.
      splits: data.Splits.
      layout: LayoutConfig.
      seed: seeds each epoch's window offset (with --random_offset).
    """

    def __init__(
        self, strategy: tf.distribute.Strategy, splits: Splits, layout: LayoutConfig, seed: int
    ) -> None:
        self._strategy = strategy
        self._layout = layout
        self._seed = seed
        self._train_ids = splits.train_ids  # compact (uint8 for most corpora), memory-mapped
        self.steps_per_epoch = num_stream_batches(
            len(splits.train_ids), layout.batch_size, layout.seq_length, layout.random_offset
        )
        self.val_batches = (
            num_stream_batches(len(splits.val_ids), layout.batch_size, layout.seq_length)
            if layout.val_fraction > 0
            else 0
        )
        self.validation = (
            distribute_streams(
                strategy,
                layout.batch_size,
                lambda first_row, num_rows: pipeline.stream_dataset(
                    splits.val_ids,
                    layout.batch_size,
                    layout.seq_length,
                    self.val_batches,
                    first_row=first_row,
                    num_rows=num_rows,
                ),
            )
            if self.val_batches
            else None
        )

    def training(self, epoch: int, batch_in_epoch: int) -> tf.distribute.DistributedDataset:
        """Distributed (epoch, batch, inputs, targets) from that data position on, epoch after epoch."""
        layout = self._layout
        return distribute_streams(
            self._strategy,
            layout.batch_size,
            lambda first_row, num_rows: pipeline.training_dataset(
                self._train_ids,
                layout.batch_size,
                layout.seq_length,
                self.steps_per_epoch,
                self._seed,
                layout.random_offset,
                epoch,
                batch_in_epoch,
                first_row=first_row,
                num_rows=num_rows,
            ),
        )
