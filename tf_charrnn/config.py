"""Frozen run configuration in sections, validated on creation; no absl, no TensorFlow.

Field names are the flag names, the config.json keys and the TensorBoard hparam names. A section says
whether its fields must match when a run resumes (the data layout, the model, the precision, the
optimisation: what a checkpoint's meaning depends on) or may change between sessions of one run (where
the corpus is found, the run's length, its cadences, the runtime).
"""

import dataclasses
import difflib
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self

from tf_charrnn.errors import UserError, flag

CELLS = ("lstm", "gru", "rnn")
# The state tensors of each cell, in the order a layer holds them.
CELL_STATES = {"lstm": ("h", "c"), "gru": ("h",), "rnn": ("h",)}
# A new run's weights (see model/initializers.py): PyTorch's scales or Keras' defaults.
EMBEDDING_INITIALIZERS = ("normal", "uniform")
WEIGHT_INITIALIZERS = ("pytorch", "keras")
LR_SCHEDULES = ("exponential", "cosine", "linear")
# Where Adam adds its epsilon (see training/optimizer.py).
ADAM_EPSILON_FORMS = ("keras", "pytorch")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
# --mixed_precision -> the Keras dtype policy of the embedding and recurrent layers (None: float32).
MIXED_PRECISION_POLICIES = {"none": None, "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
SAMPLING_MODES = ("sample", "greedy", "sample_at_space")
# Precisions of the weights a sampling step reads (SampleConfig.step_precision).
STEP_PRECISIONS = ("float32", "bfloat16", "int8")
EXPORT_FORMATS = ("saved_model", "litert", "web")
# --quantize of a LiteRT export: int8 is dynamic-range (int8 weights, float activations).
QUANTIZATIONS = ("none", "float16", "int8")
# --quantize=auto: the format's own default (a web page downloads its model: int8).
DEFAULT_QUANTIZATION = {"saved_model": "none", "litert": "none", "web": "int8"}


def resolve_quantization(quantize: str, format: str) -> str:
    """The weights an export of `format` writes for `quantize`: "auto" is the format's default
    (DEFAULT_QUANTIZATION), any other value itself."""
    return DEFAULT_QUANTIZATION[format] if quantize == "auto" else quantize


def _field(
    default: Any,
    help_text: str,
    choices: tuple[str, ...] | None = None,
    derived: bool = False,
    escaped: bool = False,
    before_recorded: Any = None,
) -> Any:
    """A dataclass field with the help text (and, for choice flags, the choices) of the flag of the same
    name; `derived` fields are computed by the library (e.g. from the corpus) and are no flags; the flag
    of an `escaped` field writes a newline as \\n, a tab as \\t, a backslash as \\\\ (see `unescape`);
    `before_recorded` is the value a config.json written before the field existed stands for (its runs
    were trained with it), where that differs from today's default."""
    metadata = {
        "help": help_text,
        "choices": choices,
        "derived": derived,
        "escaped": escaped,
        "before_recorded": before_recorded,
    }
    return dataclasses.field(default=default, metadata=metadata)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str, name: str) -> str:
    """The text an escaped flag's value stands for: \\n a newline, \\t a tab, \\r a carriage return,
    \\\\ a backslash.

    Raises:
      UserError: another character follows a backslash (naming the flag `name`).
    """
    pieces, index = [], 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            escaped = text[index + 1 : index + 2]
            _require(
                escaped in _ESCAPES,
                f"{flag(name)} has an unknown escape \\{escaped}; write \\n for a newline, \\t for "
                f"a tab, \\r for a carriage return, \\\\ for a backslash",
            )
            char, index = _ESCAPES[escaped], index + 1
        pieces.append(char)
        index += 1
    return "".join(pieces)


def escape(text: str) -> str:
    """The flag value that `unescape` turns into `text`."""
    inverse = {value: "\\" + key for key, value in _ESCAPES.items()}
    return "".join(inverse.get(char, char) for char in text)


def _require(condition: object, message: str) -> None:
    if not condition:
        raise UserError(message)


def _check_positive_ints(config: object, names: Iterable[str]) -> None:
    for name in names:
        value = getattr(config, name)
        _require(
            isinstance(value, int) and value >= 1, f"{flag(name)} must be an integer >= 1, got {value!r}"
        )


def _check_non_negative_ints(config: object, names: Iterable[str]) -> None:
    for name in names:
        value = getattr(config, name)
        _require(
            isinstance(value, int) and value >= 0, f"{flag(name)} must be an integer >= 0, got {value!r}"
        )


def _check_choices(config: Any) -> None:
    for field in dataclasses.fields(config):
        choices = field.metadata.get("choices")
        value = getattr(config, field.name)
        _require(
            choices is None or value in choices,
            f"{flag(field.name)} must be one of {', '.join(choices or ())}, got {value!r}",
        )


@dataclasses.dataclass(frozen=True)
class DirectoryConfig:
    """Which run directory, and where its weights start (may change on resume: a run may be moved)."""

    must_match_on_resume: ClassVar[bool] = False

    train_dir: str = _field("runs/default", "run directory: config, vocab, checkpoints, TensorBoard logs")
    init_from: str = _field(
        "", "start a new run from this run directory's latest weights (same vocabulary and model)"
    )

    def __post_init__(self) -> None:
        _require(bool(self.train_dir), f"{flag('train_dir')} must not be empty")
        for name in ("train_dir", "init_from"):
            # TensorFlow's checkpoint reader takes a path as a file pattern: a run there could not be read.
            path = getattr(self, name)
            _require(
                "[" not in path,
                f"{flag(name)} {path} has a '[', which TensorFlow's checkpoint reader takes as the start of "
                f"a pattern, so its checkpoints could not be read back; use a folder name without [",
            )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the corpus comes from (may change on resume: the vocabulary is checked instead)."""

    must_match_on_resume: ClassVar[bool] = False

    data_path: str = _field(
        "",
        "UTF-8 text to train on: a file, a folder (every text file below it, in sorted path order), a glob "
        "or a comma-separated list of these; empty: tiny-shakespeare, downloaded and cached on first use",
    )
    document_separator: str = _field(
        "\n\n",
        "written between two files of a folder, glob or list (\\n: newline, \\t: tab, \\\\: backslash)",
        escaped=True,
    )
    cache_dir: str = _field(
        "", "cache folder for downloads and encoded ids; empty: $TF_CHARRNN_CACHE or ~/.cache/tf_charrnn"
    )
    # The corpus a run trained on, checked on resume (empty in runs written before it was recorded).
    corpus_sha256: str = _field(
        "", "SHA-256 of the corpus file's bytes; of several files: of their manifest", derived=True
    )
    corpus_size: int = _field(0, "size of the corpus in bytes (several files: joined)", derived=True)
    corpus_files: tuple = _field((), "'SHA256  NAME' of each file of the corpus, in order", derived=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "corpus_files", tuple(self.corpus_files))  # a list, read from JSON


@dataclasses.dataclass(frozen=True)
class LayoutConfig:
    """How the corpus is split and cut into batches: fixes a checkpoint's state and data position."""

    must_match_on_resume: ClassVar[bool] = True

    batch_size: int = _field(64, "parallel streams per batch (the global batch)")
    seq_length: int = _field(100, "characters per stream per step (truncated BPTT length)")
    val_fraction: float = _field(0.1, "fraction of the corpus, at its end, held out for validation")
    test_fraction: float = _field(
        0.0,
        "fraction of the corpus, at its very end (after validation), held out for testing: never trained on "
        "nor validated on, scored by evaluate's --split=test",
    )
    random_offset: bool = _field(
        False, "shift window boundaries by a seeded offset in [0, seq_length) each epoch"
    )

    def __post_init__(self) -> None:
        _check_positive_ints(self, ("batch_size", "seq_length"))
        _require(
            0.0 <= self.val_fraction < 1.0,
            f"{flag('val_fraction')} must be in [0, 1), got {self.val_fraction}",
        )
        _require(
            0.0 <= self.test_fraction and self.val_fraction + self.test_fraction < 1.0,
            f"{flag('test_fraction')} must be >= 0 with val_fraction + test_fraction < 1, "
            f"got {self.test_fraction}",
        )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network: Embedding -> num_layers stateful recurrent layers -> Dense logits."""

    must_match_on_resume: ClassVar[bool] = True

    vocab_size: int = _field(0, "characters in the vocabulary", derived=True)
    embedding_dim: int = _field(64, "character embedding size")
    rnn_units: int = _field(512, "units of each recurrent layer")
    num_layers: int = _field(2, "stacked recurrent layers")
    dropout: float = _field(0.2, "dropout rate after each recurrent layer, in [0, 1)")
    embedding_dropout: float = _field(
        0.0,
        "dropout rate on the character embeddings (the first layer's input), in [0, 1)",
        before_recorded=0.0,
    )
    skip_connections: bool = _field(
        False,
        "the logits read every recurrent layer's output (concatenated), not only the last one's: Graves "
        "(2013)'s skip connections to the output",
        before_recorded=False,
    )
    cell: str = _field("lstm", "recurrent cell", choices=CELLS)
    embedding_initializer: str = _field(
        "normal",
        "a new run's embedding: normal N(0, 1), as PyTorch's; uniform U(-0.05, 0.05), Keras' default "
        "(feeds the first layer's gates next to nothing: it learns less per step)",
        choices=EMBEDDING_INITIALIZERS,
        before_recorded="uniform",
    )
    weight_initializer: str = _field(
        "keras",
        "a new run's recurrent and logit weights: keras, glorot-uniform kernels, orthogonal recurrent "
        "kernels, zero biases (LSTM forget gate 1); pytorch, every weight and bias U(+-1/sqrt(fan_in))",
        choices=WEIGHT_INITIALIZERS,
    )

    def __post_init__(self) -> None:
        _check_positive_ints(self, ("embedding_dim", "rnn_units", "num_layers"))
        _require(
            isinstance(self.vocab_size, int) and self.vocab_size >= 0,
            f"vocab_size must be >= 0, got {self.vocab_size!r}",
        )
        _require(0.0 <= self.dropout < 1.0, f"{flag('dropout')} must be in [0, 1), got {self.dropout}")
        _require(
            0.0 <= self.embedding_dropout < 1.0,
            f"{flag('embedding_dropout')} must be in [0, 1), got {self.embedding_dropout}",
        )
        _check_choices(self)


@dataclasses.dataclass(frozen=True)
class PrecisionConfig:
    """The compute precision: fixes the optimizer's structure (float16 adds loss scaling)."""

    must_match_on_resume: ClassVar[bool] = True

    mixed_precision: str = _field(
        "none",
        "Keras mixed precision (float16 with loss scaling); logits stay float32",
        choices=tuple(MIXED_PRECISION_POLICIES),
    )

    def __post_init__(self) -> None:
        _check_choices(self)


@dataclasses.dataclass(frozen=True)
class OptimizationConfig:
    """Adam, its learning-rate schedule, gradient clipping, and the seed of initialisation, dropout and
    data offsets: a resumed run continues the same optimisation."""

    must_match_on_resume: ClassVar[bool] = True

    learning_rate: float = _field(2e-3, "Adam learning rate (peak rate for the cosine and linear schedules)")
    lr_schedule: str = _field(
        "exponential",
        "exponential: per-epoch decay; cosine: linear warmup then cosine decay; linear: linear warmup then "
        "linear decay",
        choices=LR_SCHEDULES,
    )
    decay_rate: float = _field(
        0.97, "exponential schedule: multiply the rate by this each epoch after decay_after epochs"
    )
    decay_after: int = _field(10, "exponential schedule: epochs at the full rate")
    warmup_steps: int = _field(0, "cosine and linear schedules: linear warmup steps")
    min_learning_rate: float = _field(0.0, "cosine and linear schedules: rate reached at the last step")
    grad_clip: float = _field(5.0, "clip gradients to this global norm")
    adam_epsilon: float = _field(1e-7, "Adam's epsilon (Keras' default; PyTorch's is 1e-8)")
    adam_beta2: float = _field(
        0.999,
        "Adam's beta_2, the decay of its average of squared gradients (Keras' and PyTorch's default; 0.99 "
        "adapts faster, for small batches and short runs)",
    )
    adam_epsilon_form: str = _field(
        "keras",
        "where Adam adds its epsilon: keras, to sqrt(v) before the bias correction (epsilon-hat: it acts "
        "31.6x larger at the first step); pytorch, to the bias-corrected sqrt(v-hat), as PyTorch and optax",
        choices=ADAM_EPSILON_FORMS,
    )
    weight_decay: float = _field(
        0.0,
        "decoupled weight decay (AdamW): each step first shrinks the layers' weight matrices by "
        "learning_rate * weight_decay of themselves; biases and the embedding are not decayed",
    )
    ema_decay: float = _field(
        0.0,
        "keep an exponential moving average of the weights, decayed by this each step (0.99: about the "
        "last 100 steps), and validate, sample, evaluate and export with it; 0: the weights themselves. "
        "Early in a run the decay is min(decay, (1 + t) / (10 + t)) after step t, so the average follows "
        "the weights rather than holding on to the initial ones",
    )
    dropout_from_step: int = _field(
        0,
        "train without dropout (--dropout, --embedding_dropout) before this step and with it from this step "
        "on (late dropout: the early steps learn faster, the later ones are regularised); 0: from the first",
    )
    state_reset_probability: float = _field(
        0.1,
        "the chance that a training stream starts a batch from a zero state instead of the state it "
        "carried (sampling, scoring and evaluate start from zero)",
        before_recorded=0.0,
    )
    seed: int = _field(42, "seed for initialisation, dropout, data offsets and samples")

    def __post_init__(self) -> None:
        _require(
            math.isfinite(self.learning_rate) and self.learning_rate > 0,
            f"{flag('learning_rate')} must be > 0, got {self.learning_rate}",
        )
        _check_choices(self)
        _require(
            0.0 < self.decay_rate <= 1.0, f"{flag('decay_rate')} must be in (0, 1], got {self.decay_rate}"
        )
        _require(
            0.0 <= self.min_learning_rate <= self.learning_rate,
            f"{flag('min_learning_rate')} must be in [0, learning_rate], got {self.min_learning_rate}",
        )
        _require(
            math.isfinite(self.grad_clip) and self.grad_clip > 0,
            f"{flag('grad_clip')} must be > 0, got {self.grad_clip}",
        )
        _require(
            math.isfinite(self.adam_epsilon) and self.adam_epsilon > 0,
            f"{flag('adam_epsilon')} must be > 0, got {self.adam_epsilon}",
        )
        _require(
            0.0 < self.adam_beta2 < 1.0, f"{flag('adam_beta2')} must be in (0, 1), got {self.adam_beta2}"
        )
        _require(
            math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            f"{flag('weight_decay')} must be >= 0, got {self.weight_decay}",
        )
        _require(0.0 <= self.ema_decay < 1.0, f"{flag('ema_decay')} must be in [0, 1), got {self.ema_decay}")
        _require(
            0.0 <= self.state_reset_probability < 1.0,
            f"{flag('state_reset_probability')} must be in [0, 1), got {self.state_reset_probability}",
        )
        _check_non_negative_ints(self, ("decay_after", "warmup_steps", "dropout_from_step"))


@dataclasses.dataclass(frozen=True)
class LengthConfig:
    """How long the run trains."""

    must_match_on_resume: ClassVar[bool] = False

    num_epochs: int = _field(50, "epochs to train (when max_steps is 0)")
    max_steps: int = _field(0, "steps to train; > 0 overrides num_epochs")

    def __post_init__(self) -> None:
        _check_non_negative_ints(self, ("max_steps", "num_epochs"))
        _require(
            self.max_steps > 0 or self.num_epochs > 0,
            f"set {flag('num_epochs')} or {flag('max_steps')} above 0",
        )

    def total_steps(self, steps_per_epoch: int) -> int:
        """The run's last step: max_steps, else num_epochs epochs of steps_per_epoch."""
        return self.max_steps or self.num_epochs * steps_per_epoch


@dataclasses.dataclass(frozen=True)
class CadenceConfig:
    """What the run writes, and how often."""

    must_match_on_resume: ClassVar[bool] = False

    eval_every: int = _field(500, "steps between validation passes")
    ckpt_every: int = _field(1000, "steps between checkpoints")
    log_every: int = _field(50, "steps between progress lines and train summaries")
    keep: int = _field(3, "recent checkpoints kept (the best-validation one is kept besides)")
    sample_length: int = _field(200, "characters of the sample written to TensorBoard at each eval; 0: none")
    patience: int = _field(
        0, "stop (with a checkpoint) after this many validations without a new best; 0: never stop early"
    )

    def __post_init__(self) -> None:
        _check_positive_ints(self, ("eval_every", "ckpt_every", "log_every", "keep"))
        _check_non_negative_ints(self, ("sample_length", "patience"))


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how the steps run (see runtime.py, which resolves it once at start). It describes one
    launch, not the run: a resumed run takes it from the new launch, never from config.json."""

    must_match_on_resume: ClassVar[bool] = False
    describes_launch: ClassVar[bool] = True

    strategy: str = _field(
        "auto",
        "tf.distribute strategy: auto (mirrored when several GPUs are visible, else default), default, "
        "mirrored, multi_worker (set by TF_CONFIG) or tpu",
        choices=STRATEGIES,
    )
    tpu: str = _field("", "with --strategy=tpu: the TPU name or grpc:// address; empty: the local TPU VM")
    jit_compile: bool = _field(False, "compile the train and eval steps with XLA")
    deterministic: bool = _field(
        False, "enable TensorFlow op determinism (bitwise-reproducible runs, slower on GPU)"
    )

    def __post_init__(self) -> None:
        _check_choices(self)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a run directory's config.json records, one section per concern."""

    directory: DirectoryConfig = dataclasses.field(default_factory=DirectoryConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    layout: LayoutConfig = dataclasses.field(default_factory=LayoutConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    precision: PrecisionConfig = dataclasses.field(default_factory=PrecisionConfig)
    optimization: OptimizationConfig = dataclasses.field(default_factory=OptimizationConfig)
    length: LengthConfig = dataclasses.field(default_factory=LengthConfig)
    cadence: CadenceConfig = dataclasses.field(default_factory=CadenceConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)

    @classmethod
    def sections(cls) -> dict[str, Any]:
        """{section name: section class}, in config.json order."""
        return {field.name: field.type for field in dataclasses.fields(cls)}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """{field name: value} over every section (field names are unique across sections)."""
        return {name: value for section in self.to_dict().values() for name, value in section.items()}

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> Self:
        """Builds a RunConfig from {field name: value}; unset fields keep their defaults.

        Raises:
          UserError: a name is no field of any section.
        """
        values = dict(values)
        parts = {}
        for name, section in cls.sections().items():
            names = {field.name for field in dataclasses.fields(section)}
            parts[name] = section(**{key: values.pop(key) for key in names & set(values)})
        _require(not values, f"unknown config keys {sorted(values)}")
        return cls(**parts)

    @classmethod
    def from_dict(cls, values: Mapping[str, Mapping[str, Any]]) -> Self:
        """Builds a RunConfig from `to_dict` output, or from the config.json of a run written before the
        sections (data, model and train only); unknown sections or keys raise UserError."""
        unknown = set(values) - set(cls.sections()) - {"train"}
        _require(not unknown, f"unknown config sections {sorted(unknown)}")
        recorded = {name: value for section in values.values() for name, value in section.items()}
        before = {
            field.name: field.metadata["before_recorded"]
            for field in _all_fields(cls)
            if field.metadata.get("before_recorded") is not None and field.name not in recorded
        }
        return cls.from_flat({**before, **recorded})

    def replace(self, **values: Any) -> Self:
        """A copy with the named fields (of any section) changed."""
        return type(self).from_flat({**self.flat(), **values})

    def continued_by(self, launch: "RunConfig", given: Mapping[str, Any]) -> Self:
        """This (a run's recorded config) as a new launch continues it: the flags `given` now ({name:
        value}) on top, and every section that describes a launch (the runtime) from `launch`, the new
        launch's config (its given values or the defaults), never from the recorded run."""
        values = {**self.flat(), **given}
        for name, section in self.sections().items():
            if getattr(section, "describes_launch", False):
                values.update(dataclasses.asdict(getattr(launch, name)))
        return type(self).from_flat(values)

    def with_model_of(self, source: "RunConfig", given: Mapping[str, Any]) -> Self:
        """This config with each model field not in `given` ({name: value} of the flags given) taken from
        `source`, the RunConfig of the run it starts from (--init_from); vocab_size is derived anew."""
        return self.replace(
            **{
                field.name: getattr(source.model, field.name)
                for field in dataclasses.fields(ModelConfig)
                if field.name not in given and not field.metadata["derived"]
            }
        )

    def differences_that_block_resume(self, other: "RunConfig") -> list[str]:
        """'name old -> new' for each field of a must-match section where `other` differs."""
        changed = []
        for name, section in self.sections().items():
            if section.must_match_on_resume:
                mine, theirs = getattr(self, name), getattr(other, name)
                changed += [
                    f"{field.name} {getattr(mine, field.name)!r} -> {getattr(theirs, field.name)!r}"
                    for field in dataclasses.fields(section)
                    if getattr(mine, field.name) != getattr(theirs, field.name)
                ]
        return changed


def _check_generation(config: "SampleConfig | WebPageConfig") -> None:
    """Checks the settings that SampleConfig and WebPageConfig share: length, temperature and top_k."""
    _require(
        isinstance(config.length, int) and config.length >= 0,
        f"{flag('length')} must be >= 0, got {config.length}",
    )
    _require(
        math.isfinite(config.temperature) and config.temperature > 0,
        f"{flag('temperature')} must be > 0, got {config.temperature}",
    )
    _require(
        isinstance(config.top_k, int) and config.top_k >= 0,
        f"{flag('top_k')} must be >= 0, got {config.top_k}",
    )


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """What to generate from a trained run."""

    train_dir: str = _field("runs/default", "run directory to sample from")
    checkpoint: str = _field("", "checkpoint prefix to load; empty: the latest (or the best with --best)")
    best: bool = _field(False, "load the best-validation checkpoint")
    prime: str = _field("\n", "text that sets the state before generating")
    prime_file: str = _field("", "read the prime from this UTF-8 file instead of --prime")
    length: int = _field(500, "characters to generate per sample")
    num_samples: int = _field(1, "texts generated at once, as one batch")
    seed: int = _field(0, "seed of the random draws: the same seed gives the same text")
    temperature: float = _field(1.0, "divide logits by this; < 1 is more conservative")
    top_k: int = _field(0, "sample among the k most likely characters; 0: all")
    top_p: float = _field(1.0, "sample among the most likely characters holding this probability mass")
    sampling: str = _field(
        "sample",
        "sample: weighted random; greedy: argmax; sample_at_space: random only after a space",
        choices=SAMPLING_MODES,
    )
    stream: bool = _field(False, "print characters as they are generated (one step per call)")
    step_precision: str = _field(
        "float32",
        "weights each generated character's step reads: float32; bfloat16: half the bytes, faster at "
        "batch 1 where the CPU has AVX512-BF16; int8: a quarter of the bytes (and each step's inputs in "
        "int8), the fastest where the CPU has AVX512-VNNI; float32 where the CPU lacks them; the text is no "
        "longer the float32 step's or the SavedModel's for a seed (evaluate.py --step_precision: the loss "
        "it costs)",
        choices=STEP_PRECISIONS,
    )
    stop_at: str = _field(
        "",
        "end each sample after the first occurrence of this string in its generated text (not the prime), "
        "the string included; \\n: newline, \\t: tab, \\\\: backslash; e.g. \\n\\n stops at a blank line",
        escaped=True,
    )
    output: str = _field(
        "", "write the samples to this file (atomically, after generating) instead of standard output"
    )

    def __post_init__(self) -> None:
        _require(bool(self.train_dir), f"{flag('train_dir')} must not be empty")
        _check_generation(self)
        _check_positive_ints(self, ("num_samples",))
        _require(0.0 < self.top_p <= 1.0, f"{flag('top_p')} must be in (0, 1], got {self.top_p}")
        _check_choices(self)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Which run to export, in which format, and where."""

    train_dir: str = _field("runs/default", "run directory to export")
    export_dir: str = _field(
        "",
        "folder to write; empty: TRAIN_DIR/export (saved_model), TRAIN_DIR/export_litert (litert) or "
        "TRAIN_DIR/export_web (web)",
    )
    checkpoint: str = _field("", "checkpoint prefix to export; empty: the latest (or the best with --best)")
    best: bool = _field(False, "export the best-validation checkpoint")
    overwrite: bool = _field(False, "replace a non-empty --export_dir")
    format: str = _field(
        "saved_model",
        "saved_model: generation signatures for TensorFlow; litert: model.tflite (the step alone, LiteRT "
        "builtin ops) and vocab.json, for the LiteRT interpreter without TensorFlow; web: a static page "
        "(index.html) generating text in the browser with that model at batch 1 on LiteRT.js",
        choices=EXPORT_FORMATS,
    )
    quantize: str = _field(
        "auto",
        "with --format=litert or web: the weights as float32 (none), float16, or int8 (dynamic range: "
        "int8 weights, float activations); auto: int8 for web, none for litert",
        choices=("auto", *QUANTIZATIONS),
    )
    web_runtime_dir: str = _field(
        "",
        "with --format=web: a node_modules folder holding LiteRT.js (`npm ci` in web/ installs it) whose "
        "runtime files the page gets a copy of, so that it needs no network; empty: the page loads "
        "LiteRT.js from the jsDelivr CDN",
    )

    def __post_init__(self) -> None:
        _require(bool(self.train_dir), f"{flag('train_dir')} must not be empty")
        _check_choices(self)
        # Resolved here, so that the config names the weights it exports.
        object.__setattr__(self, "quantize", resolve_quantization(self.quantize, self.format))
        _require(
            self.quantize == "none" or self.format in ("litert", "web"),
            f"{flag('quantize')}={self.quantize} applies to LiteRT exports only; add {flag('format')}=litert "
            f"or {flag('format')}=web (a SavedModel keeps float32 weights)",
        )
        _require(
            not self.web_runtime_dir or self.format == "web",
            f"{flag('web_runtime_dir')} applies to web exports only; add {flag('format')}=web",
        )


@dataclasses.dataclass(frozen=True)
class WebPageConfig:
    """A web export's page to run in headless Chromium, and the settings to generate with there."""

    export_dir: str = _field("", "a folder written by scripts/export.py --format=web")
    prime: str = _field("", "text that sets the state before generating; empty: the page's own")
    length: int = _field(500, "characters to generate")
    sampling: str = _field("sample", "sample: weighted random; greedy: argmax", choices=("sample", "greedy"))
    temperature: float = _field(1.0, "divide logits by this; < 1 is more conservative")
    top_k: int = _field(0, "sample among the k most likely characters; 0: all")
    seed: int = _field(0, "seed of the page's random draws: the same seed gives the same text")
    screenshot: str = _field("", "write a PNG of the page after generating here")
    width: int = _field(1280, "the browser window's width in CSS pixels (390: a phone)")
    chromium: str = _field("/usr/bin/chromium", "the Chromium executable to drive")

    def __post_init__(self) -> None:
        _require(
            bool(self.export_dir), f"{flag('export_dir')} must name a folder written by {flag('format')}=web"
        )
        _check_generation(self)
        _require(
            isinstance(self.seed, int) and 0 <= self.seed < 2**32,
            f"{flag('seed')} must be in [0, 2**32), got {self.seed}",
        )
        _check_positive_ints(self, ("width",))
        _check_choices(self)


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Which run's checkpoint to score, and on which text."""

    train_dir: str = _field("runs/default", "run directory to evaluate")
    checkpoint: str = _field("", "checkpoint prefix to score; empty: the latest (or the best with --best)")
    best: bool = _field(False, "score the best-validation checkpoint")
    data_path: str = _field(
        "",
        "UTF-8 text to score: a file, a folder, a glob or a comma-separated list (files joined with the "
        "run's --document_separator); empty: the run's own held-out split (see --split)",
    )
    split: str = _field(
        "validation",
        "without --data_path: the run's held-out split to score (test: the --test_fraction at the end)",
        choices=("validation", "test"),
    )
    skip_unknown: bool = _field(
        False, "leave out (and count) characters outside the run's vocabulary instead of refusing the text"
    )
    reset_every: int = _field(
        0,
        "N > 0: cut the text into pieces of N characters, each scored from a zero state (how the model "
        "does from a short prime); 0: the run's streams, each state carried through its share of the text",
    )
    step_precision: str = _field(
        "none",
        "none: the model's sequence pass (what training's validation logs); float32, bfloat16, int8: each "
        "character through the sampling step on weights in that precision (what sample.py "
        "--step_precision generates from: the loss its bfloat16 or int8 weights cost)",
        choices=("none", *STEP_PRECISIONS),
    )
    json: bool = _field(False, "print one JSON line instead of the human-readable line")

    def __post_init__(self) -> None:
        _require(bool(self.train_dir), f"{flag('train_dir')} must not be empty")
        _check_choices(self)
        _check_non_negative_ints(self, ("reset_every",))


INSPECT_STATES = ("auto", "h", "c")


@dataclasses.dataclass(frozen=True)
class InspectConfig:
    """Which run to look inside, on which text, and where the page, plots and rankings go."""

    train_dir: str = _field("runs/default", "run directory to inspect")
    checkpoint: str = _field("", "checkpoint prefix to inspect; empty: the latest (or the best with --best)")
    best: bool = _field(False, "inspect the best-validation checkpoint")
    data_path: str = _field(
        "",
        "UTF-8 text to run through the model: a file, a folder, a glob or a comma-separated list (files "
        "joined with the run's --document_separator); empty: the run's own validation split",
    )
    skip_unknown: bool = _field(
        False, "leave out characters outside the run's vocabulary instead of refusing the text"
    )
    output_dir: str = _field("", "folder to write inspect.html, the PNG plots and ranking.json into")
    overwrite: bool = _field(False, "replace a non-empty --output_dir")
    max_chars: int = _field(100_000, "characters of the text to inspect (its first ones)")
    page_chars: int = _field(5_000, "characters the page colours (the first ones of the text)")
    top_cells: int = _field(5, "cells listed for each feature")
    layer: int = _field(0, "the layer of --cell, 1 to --num_layers; 0: the last layer")
    cell: int = _field(-1, "the cell the page and the activation plot show first; -1: the best cell found")
    state: str = _field(
        "auto", "which state of --cell: h or c (LSTM only); auto: c for an LSTM, h otherwise", INSPECT_STATES
    )
    tensorboard: bool = _field(
        True, "also write the figures and rankings to TensorBoard in TRAIN_DIR/logs/inspect"
    )

    def __post_init__(self) -> None:
        _require(bool(self.train_dir), f"{flag('train_dir')} must not be empty")
        _require(bool(self.output_dir), f"{flag('output_dir')} must name the folder to write the report into")
        _check_choices(self)
        _require(self.max_chars >= 2, f"{flag('max_chars')} must be >= 2, got {self.max_chars}")
        _require(self.page_chars >= 1, f"{flag('page_chars')} must be >= 1, got {self.page_chars}")
        _require(self.top_cells >= 1, f"{flag('top_cells')} must be >= 1, got {self.top_cells}")
        _require(self.layer >= 0, f"{flag('layer')} must be >= 0 (0: the last layer), got {self.layer}")
        _require(
            self.cell >= -1, f"{flag('cell')} must be >= 0 (or -1: the best cell found), got {self.cell}"
        )

    def chosen_cell(self, model: "ModelConfig") -> tuple[str, str, int] | None:
        """(layer, state, index) that --layer, --cell and --state name, checked against the run's `model`;
        None: the best cell found.

        Raises:
          UserError: a state, layer or cell the run does not have.
        """
        states = CELL_STATES[model.cell]
        state = states[-1] if self.state == "auto" else self.state
        if state not in states:
            raise UserError(
                f"{flag('state')}={state}: a {model.cell} layer has no cell state c; use {flag('state')}=h"
            )
        layers, units = model.num_layers, model.rnn_units
        if self.layer > layers:
            raise UserError(
                f"{flag('layer')}={self.layer} is out of range: the run has {layers} layer(s); "
                f"pass 1 to {layers} (0: the last)"
            )
        if self.cell >= units:
            raise UserError(
                f"{flag('cell')}={self.cell} is out of range: each layer of the run has {units} cells; "
                f"pass 0 to {units - 1} (-1: the best cell found)"
            )
        if self.cell < 0:
            return None
        return f"{model.cell}_{self.layer or model.num_layers}", state, self.cell


def _all_fields(config_class: type) -> list[dataclasses.Field]:
    sections = getattr(config_class, "sections", None)
    classes = sections().values() if sections else [config_class]
    return [field for cls in classes for field in dataclasses.fields(cls)]


def flag_fields(config_class: type) -> list[dataclasses.Field]:
    """The fields of a config class (or of every section of a RunConfig) that are flags (and Python
    arguments): all but the derived ones."""
    return [field for field in _all_fields(config_class) if not field.metadata.get("derived")]


_TYPE_NAMES: dict[Any, str] = {bool: "True or False", int: "an int", float: "a number", str: "a string"}


def python_settings(config_class: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """Checks Python keyword arguments meant for the flags of `config_class` (a RunConfig: of all its
    sections), as the flag parser checks command lines: known names, values of the flag's type.

    Args:
      config_class: a config dataclass, or RunConfig.
      values: {name: value}.

    Returns:
      {name: value}, numbers made the setting's type (an int given for a float setting is fine), paths
      (os.PathLike) strings.
    Raises:
      UserError: a name that is no setting (naming the closest one), or a value of another type; the
        message names the argument as it is typed in Python (`batch_size=`).
    """
    fields = {field.name: field for field in flag_fields(config_class)}
    derived = {field.name for field in _all_fields(config_class)} - set(fields)
    checked = {}
    for name, value in values.items():
        _require(name not in derived, f"{name}= is no setting: it is derived from the corpus")
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f"did you mean {close[0]}=?" if close else f"the settings are {', '.join(sorted(fields))}"
            raise UserError(f"unknown setting {name}=; {hint}")
        kind = fields[name].type
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if kind is str and isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif kind is int and number and isinstance(value, numbers.Integral):
            value = int(value)
        elif kind is float and number:
            value = float(value)
        _require(type(value) is kind, f"{name}= must be {_TYPE_NAMES[kind]}, got {value!r}")
        checked[name] = value
    return checked


def _int_list(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    _require(
        bool(values) and all(value > 0 for value in values),
        f"{flag(name)} must be a comma-separated list of positive integers, got {text!r}",
    )
    return values


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
    """A grid of runs reproducing a paper's table (the runs' settings come from --protocol)."""

    table: str = _field("karpathy2015", "the paper's table to reproduce", choices=("karpathy2015",))
    corpus: str = _field("", "the corpus file (War and Peace for karpathy2015)")
    out_dir: str = _field("runs/karpathy2015", "folder of the grid: one run directory per cell, the table")
    protocol: str = _field(
        "configs/karpathy2015_warpeace.cfg", "flagfile of the runs' settings (split, batch, length)"
    )
    cells: str = _field("lstm,gru,rnn", "comma-separated recurrent cells")
    layers: str = _field("1,2,3", "comma-separated layer counts")
    sizes: str = _field("", "comma-separated units per layer; empty: the paper's sizes")
    max_steps: int = _field(0, "steps per cell, capping the protocol's length (the table says so); 0: none")
    mixed_precision: str = _field(
        "", "the runs' precision (bfloat16: faster on CPUs with AVX512-BF16); empty: the protocol's"
    )

    def __post_init__(self) -> None:
        _check_choices(self)
        _require(
            self.mixed_precision in ("", *MIXED_PRECISION_POLICIES),
            f"{flag('mixed_precision')} must be one of {', '.join(MIXED_PRECISION_POLICIES)}, "
            f"got {self.mixed_precision!r}",
        )
        _require(bool(self.corpus), f"set {flag('corpus')} to the corpus file")
        _require(bool(self.out_dir), f"{flag('out_dir')} must not be empty")
        unknown = [cell for cell in self.cells.split(",") if cell not in CELLS]
        _require(not unknown, f"{flag('cells')} must name cells of {', '.join(CELLS)}, got {self.cells!r}")
        _int_list(self.layers, "layers")
        if self.sizes:
            _int_list(self.sizes, "sizes")
        _check_non_negative_ints(self, ("max_steps",))

    def layer_counts(self) -> tuple[int, ...]:
        return _int_list(self.layers, "layers")

    def unit_counts(self, default: tuple[int, ...]) -> tuple[int, ...]:
        return _int_list(self.sizes, "sizes") if self.sizes else default
