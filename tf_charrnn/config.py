"""Frozen run configuration: what the data, model, training and sampler are, validated on creation.

Field names are the flag names, the config.json keys and the TensorBoard hparam names.
"""

import dataclasses
import math

CELLS = ("lstm", "gru", "rnn")
LR_SCHEDULES = ("exponential", "cosine")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
MIXED_PRECISION = ("none", "bfloat16", "float16")


def _field(default, help_text):
    """A dataclass field whose help text the scripts show for the flag of the same name."""
    return dataclasses.field(default=default, metadata={"help": help_text})


class UserError(ValueError):
    """A problem with what the user asked for; its message names the problem and the fix."""


def _require(condition, message):
    if not condition:
        raise UserError(message)


def _check_positive_ints(config, names):
    for name in names:
        value = getattr(config, name)
        _require(isinstance(value, int) and value >= 1, f"--{name} must be an integer >= 1, got {value!r}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the corpus comes from and how it is cut into batches."""

    data_path: str = _field(
        "", "UTF-8 text file to train on; empty: tiny-shakespeare, downloaded and cached on first use"
    )
    cache_dir: str = _field(
        "", "cache folder for downloads and encoded ids; empty: $TF_CHARRNN_CACHE or ~/.cache/tf_charrnn"
    )
    val_fraction: float = _field(0.1, "fraction of the corpus, at its end, held out for validation")
    batch_size: int = _field(64, "parallel streams per batch (the global batch)")
    seq_length: int = _field(100, "characters per stream per step (truncated BPTT length)")
    random_offset: bool = _field(
        False, "shift window boundaries by a seeded offset in [0, seq_length) each epoch"
    )

    def __post_init__(self):
        _check_positive_ints(self, ("batch_size", "seq_length"))
        _require(0.0 <= self.val_fraction < 1.0, f"--val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network: Embedding -> num_layers stateful recurrent layers -> Dense logits."""

    vocab_size: int = _field(0, "derived from the corpus")
    embedding_dim: int = _field(64, "character embedding size")
    rnn_units: int = _field(512, "units of each recurrent layer")
    num_layers: int = _field(2, "stacked recurrent layers")
    dropout: float = _field(0.2, "dropout rate after each recurrent layer, in [0, 1)")
    cell: str = _field("lstm", "recurrent cell: lstm, gru or rnn")

    def __post_init__(self):
        _check_positive_ints(self, ("embedding_dim", "rnn_units", "num_layers"))
        _require(
            isinstance(self.vocab_size, int) and self.vocab_size >= 0,
            f"vocab_size must be >= 0, got {self.vocab_size!r}",
        )
        _require(0.0 <= self.dropout < 1.0, f"--dropout must be in [0, 1), got {self.dropout}")
        _require(self.cell in CELLS, f"--cell must be one of {', '.join(CELLS)}, got {self.cell!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimisation, its schedule, and what the run writes and when."""

    train_dir: str = _field("runs/default", "run directory: config, vocab, checkpoints, TensorBoard logs")
    learning_rate: float = _field(2e-3, "Adam learning rate (peak rate for the cosine schedule)")
    lr_schedule: str = _field(
        "exponential", "exponential: per-epoch decay; cosine: linear warmup then cosine decay"
    )
    decay_rate: float = _field(
        0.97, "exponential schedule: multiply the rate by this each epoch after decay_after epochs"
    )
    decay_after: int = _field(10, "exponential schedule: epochs at the full rate")
    warmup_steps: int = _field(0, "cosine schedule: linear warmup steps")
    min_learning_rate: float = _field(0.0, "cosine schedule: rate reached at the last step")
    grad_clip: float = _field(5.0, "clip gradients to this global norm")
    num_epochs: int = _field(50, "epochs to train (when max_steps is 0)")
    max_steps: int = _field(0, "steps to train; > 0 overrides num_epochs")
    eval_every: int = _field(500, "steps between validation passes")
    ckpt_every: int = _field(1000, "steps between checkpoints")
    log_every: int = _field(50, "steps between progress lines and train summaries")
    keep: int = _field(3, "recent checkpoints kept (the best-validation one is kept besides)")
    seed: int = _field(42, "seed for initialisation, dropout, data offsets and samples")
    deterministic: bool = _field(
        False, "enable TensorFlow op determinism (bitwise-reproducible runs, slower on GPU)"
    )
    jit_compile: bool = _field(False, "compile the train and eval steps with XLA")
    strategy: str = _field(
        "auto",
        "tf.distribute strategy: auto (mirrored when several GPUs are visible, else default), default, "
        "mirrored, multi_worker (set by TF_CONFIG) or tpu",
    )
    tpu: str = _field("", "with --strategy=tpu: the TPU name or grpc:// address; empty: the local TPU VM")
    mixed_precision: str = _field(
        "none", "Keras mixed precision: none, bfloat16 or float16 (with loss scaling); logits stay float32"
    )
    init_from: str = _field(
        "", "start a new run from this run directory's latest weights (same vocabulary and model)"
    )
    sample_length: int = _field(200, "characters of the sample written to TensorBoard at each eval; 0: none")

    def __post_init__(self):
        _require(bool(self.train_dir), "--train_dir must not be empty")
        _require(
            math.isfinite(self.learning_rate) and self.learning_rate > 0,
            f"--learning_rate must be > 0, got {self.learning_rate}",
        )
        _require(
            self.lr_schedule in LR_SCHEDULES,
            f"--lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}",
        )
        _require(0.0 < self.decay_rate <= 1.0, f"--decay_rate must be in (0, 1], got {self.decay_rate}")
        _require(
            0.0 <= self.min_learning_rate <= self.learning_rate,
            f"--min_learning_rate must be in [0, learning_rate], got {self.min_learning_rate}",
        )
        _require(
            math.isfinite(self.grad_clip) and self.grad_clip > 0,
            f"--grad_clip must be > 0, got {self.grad_clip}",
        )
        for name in ("decay_after", "warmup_steps", "max_steps", "num_epochs", "sample_length"):
            value = getattr(self, name)
            _require(
                isinstance(value, int) and value >= 0, f"--{name} must be an integer >= 0, got {value!r}"
            )
        _check_positive_ints(self, ("eval_every", "ckpt_every", "log_every", "keep"))
        _require(
            self.strategy in STRATEGIES,
            f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}",
        )
        _require(
            self.mixed_precision in MIXED_PRECISION,
            f"--mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}",
        )
        _require(self.max_steps > 0 or self.num_epochs > 0, "set --num_epochs or --max_steps above 0")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a run directory's config.json records."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """Builds a RunConfig from `to_dict` output; unknown keys raise ValueError."""
        sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
        unknown = set(values) - set(sections)
        _require(not unknown, f"unknown config sections {sorted(unknown)}")
        parts = {}
        for name, section in sections.items():
            fields = {f.name for f in dataclasses.fields(section)}
            given = values.get(name, {})
            extra = set(given) - fields
            _require(not extra, f"unknown {name} config keys {sorted(extra)}")
            parts[name] = section(**given)
        return cls(**parts)


SAMPLING_MODES = ("sample", "greedy", "sample_at_space")


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """What to generate from a trained run."""

    train_dir: str = _field("runs/default", "run directory to sample from")
    checkpoint: str = _field("", "checkpoint prefix to load; empty: the latest (or the best with --best)")
    best: bool = _field(False, "load the best-validation checkpoint")
    prime: str = _field("\n", "text that sets the state before generating")
    length: int = _field(500, "characters to generate per sample")
    num_samples: int = _field(1, "texts generated at once, as one batch")
    seed: int = _field(0, "seed of the random draws: the same seed gives the same text")
    temperature: float = _field(1.0, "divide logits by this; < 1 is more conservative")
    top_k: int = _field(0, "sample among the k most likely characters; 0: all")
    top_p: float = _field(1.0, "sample among the most likely characters holding this probability mass")
    sampling: str = _field(
        "sample", "sample: weighted random; greedy: argmax; sample_at_space: random only after a space"
    )
    stream: bool = _field(False, "print characters as they are generated (one step per call)")

    def __post_init__(self):
        _require(bool(self.train_dir), "--train_dir must not be empty")
        _require(
            isinstance(self.length, int) and self.length >= 0, f"--length must be >= 0, got {self.length}"
        )
        _check_positive_ints(self, ("num_samples",))
        _require(
            math.isfinite(self.temperature) and self.temperature > 0,
            f"--temperature must be > 0, got {self.temperature}",
        )
        _require(isinstance(self.top_k, int) and self.top_k >= 0, f"--top_k must be >= 0, got {self.top_k}")
        _require(0.0 < self.top_p <= 1.0, f"--top_p must be in (0, 1], got {self.top_p}")
        _require(
            self.sampling in SAMPLING_MODES,
            f"--sampling must be one of {', '.join(SAMPLING_MODES)}, got {self.sampling!r}",
        )


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Which run to export as a SavedModel, and where."""

    train_dir: str = _field("runs/default", "run directory to export")
    export_dir: str = _field("", "SavedModel folder to write; empty: TRAIN_DIR/export")
    checkpoint: str = _field("", "checkpoint prefix to export; empty: the latest (or the best with --best)")
    best: bool = _field(False, "export the best-validation checkpoint")
    overwrite: bool = _field(False, "replace a non-empty --export_dir")
