"""Text generation: pure, seeded sampling strategies on logits, and a stateful sampler compiled as one loop.

Random draws use stateless ops keyed by (seed, step), so the same seed gives the same text.
"""

import functools

import keras
import tensorflow as tf

from tf_charrnn import model as model_lib
from tf_charrnn import native, run_directory
from tf_charrnn.config import SAMPLING_MODES, UserError

# CharRnnLstmStep works on blocks of this many units.
STEP_KERNEL_UNITS_MULTIPLE = 16


def filter_logits(logits, temperature=1.0, top_k=0, top_p=1.0):
    """Scales logits by 1/temperature and masks all but the top-k / top-p (nucleus) choices.

    Args:
      logits: float [B, V].
      temperature: > 0; below 1 sharpens, above 1 flattens.
      top_k: keep the k highest logits per row (and ties with the k-th); 0 keeps all.
      top_p: keep the smallest set of highest-probability ids whose mass reaches top_p; 1 keeps all.

    Returns:
      float32 [B, V] logits, masked entries set to -inf.
    """
    logits = tf.cast(logits, tf.float32) / temperature
    neg_inf = tf.fill(tf.shape(logits), float("-inf"))
    vocab_size = tf.shape(logits)[-1]
    top_k = tf.convert_to_tensor(top_k, tf.int32)
    k = tf.where(top_k > 0, tf.minimum(top_k, vocab_size), vocab_size)
    kth_largest = tf.math.top_k(logits, k=k).values[:, -1:]
    logits = tf.where(logits < kth_largest, neg_inf, logits)
    sorted_logits = tf.sort(logits, direction="DESCENDING", axis=-1)
    mass_before = tf.cumsum(tf.nn.softmax(sorted_logits, axis=-1), axis=-1, exclusive=True)
    # Ids whose preceding probability mass is still below top_p are kept; ties with the last kept stay.
    num_kept = tf.reduce_sum(tf.cast(mass_before < top_p, tf.int32), axis=-1, keepdims=True)
    lowest_kept = tf.gather(sorted_logits, tf.maximum(num_kept, 1) - 1, batch_dims=1)
    return tf.where((top_p < 1.0) & (logits < lowest_kept), neg_inf, logits)


def choose_next(
    logits, seed, step, mode="sample", previous_ids=None, space_id=-1, temperature=1.0, top_k=0, top_p=1.0
):
    """Picks the next id of every row.

    Args:
      logits: float [B, V] scores for the next character.
      seed: int seed; with `step` it keys the stateless draw.
      step: int position in the generated text.
      mode: "sample" (weighted random), "greedy" (argmax), or "sample_at_space" (random only right
        after a space, argmax otherwise, as in TF1 char-rnn).
      previous_ids: int32 [B] ids just emitted (used by sample_at_space).
      space_id: the id of " " in the vocabulary, -1 if absent.
      temperature, top_k, top_p: see `filter_logits`.

    Returns:
      int32 [B] ids.
    """
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    if mode == "greedy":
        return greedy
    # Most draws filter nothing; skipping the sorts then leaves the same logits at a fraction of the cost.
    filtered = tf.cond(
        (tf.convert_to_tensor(top_k) > 0) | (tf.convert_to_tensor(top_p) < 1.0),
        lambda: filter_logits(logits, temperature, top_k, top_p),
        lambda: tf.cast(logits, tf.float32) / temperature,
    )
    draw_seed = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
    sampled = tf.cast(tf.random.stateless_categorical(filtered, 1, seed=draw_seed)[:, 0], tf.int32)
    if mode == "sample":
        return sampled
    if mode == "sample_at_space":
        return tf.where(tf.equal(previous_ids, space_id), sampled, greedy)
    raise ValueError(f"unknown sampling mode {mode!r}; use one of {', '.join(SAMPLING_MODES)}")


class StepModel(tf.Module):
    """One step of a Char-RNN with explicit state, built from a Keras model's layers (weights shared).

    States are one float32 tensor [L, S, B, H] (S = 2 for LSTM's h and c, 1 for GRU and RNN), the
    form a serving runtime can carry between calls. The cells have no batch size, so one StepModel
    serves any batch.

    With `kernels` (the module `native.load()` returns) an LSTM's layers run as one CharRnnLstmStep
    op each, on weights packed once per `read_weights()`; without, as TensorFlow ops only (what a
    SavedModel must hold).
    """

    def __init__(self, model, kernels=None):
        super().__init__(name="step_model")
        self.embedding = model.get_layer("embedding")
        self.cells = [layer.cell for layer in model_lib.recurrent_layers(model)]
        self.head = model.get_layer("logits")
        self.states_per_layer = 2 if isinstance(self.cells[0], keras.layers.LSTMCell) else 1
        self.units = self.cells[0].units
        step_kernel_applies = self.states_per_layer == 2 and self.units % STEP_KERNEL_UNITS_MULTIPLE == 0
        self._kernels = kernels if step_kernel_applies else None
        # The raw tf.Variables behind the Keras variables, tracked so that a SavedModel carries them
        # where graph-mode tools (saved_model_cli run) look for them.
        self.raw_variables = [variable.value for variable in model.trainable_variables]

    def initial_state(self, batch_size):
        """Zero states, float32 [L, S, B, H]."""
        return tf.zeros([len(self.cells), self.states_per_layer, batch_size, self.units])

    def read_weights(self):
        """The LSTM weights as tensors, to read once before a loop of steps: a variable read inside a
        while loop happens at every step, and at batch 1 those reads cost as much as the matmuls.
        None for GRU and RNN, whose Keras cells read their own variables."""
        if self.states_per_layer != 2:
            return None
        if self._kernels is not None:
            return {
                "embedding": tf.convert_to_tensor(self.embedding.embeddings),
                "packed": [_pack_lstm_weights(cell, self.units) for cell in self.cells],
                "biases": [tf.convert_to_tensor(cell.bias) for cell in self.cells],
                "head_kernel": tf.convert_to_tensor(self.head.kernel),
                "head_bias": tf.convert_to_tensor(self.head.bias),
            }
        return {
            "embedding": tf.convert_to_tensor(self.embedding.embeddings),
            "kernels": [tf.convert_to_tensor(cell.kernel) for cell in self.cells],
            "recurrent_kernels": [tf.convert_to_tensor(cell.recurrent_kernel) for cell in self.cells],
            "biases": [tf.convert_to_tensor(cell.bias) for cell in self.cells],
            "head_kernel": tf.convert_to_tensor(self.head.kernel),
            "head_bias": tf.convert_to_tensor(self.head.bias),
        }

    def __call__(self, ids, states, weights=None):
        """Advances every row by one character.

        Args:
          ids: int32 [B] current characters.
          states: float32 [L, S, B, H].
          weights: `read_weights()`, read once outside a loop; None reads them here.

        Returns:
          (logits float32 [B, V] for the next character, new states float32 [L, S, B, H]).
        """
        if self.states_per_layer == 2:
            return self._lstm_step(ids, states, weights or self.read_weights())
        x = self.embedding(ids)
        new_states = []
        for layer, cell in enumerate(self.cells):
            x, layer_states = cell(x, tf.unstack(states[layer], num=self.states_per_layer), training=False)
            new_states.append(tf.stack(tf.nest.flatten(layer_states)))
        return self.head(x), tf.stack(new_states)

    def _lstm_step(self, ids, states, weights):
        """The LSTM step on weight tensors: Keras LSTMCell's arithmetic, in the same order, without
        its per-call bookkeeping (a batch-1 step is mostly per-op overhead and weight reads)."""
        x = tf.gather(weights["embedding"], ids)
        new_states = []
        for layer in range(len(self.cells)):
            h, c = states[layer, 0], states[layer, 1]
            if "packed" in weights:
                x, c = self._kernels.char_rnn_lstm_step(
                    x, h, c, weights["packed"][layer], weights["biases"][layer]
                )
                new_states.append(tf.stack([x, c]))
                continue
            z = (
                tf.matmul(x, weights["kernels"][layer])
                + tf.matmul(h, weights["recurrent_kernels"][layer])
                + weights["biases"][layer]
            )
            input_gate, forget_gate, candidate, output_gate = tf.split(z, 4, axis=-1)
            c = tf.sigmoid(forget_gate) * c + tf.sigmoid(input_gate) * tf.tanh(candidate)
            x = tf.sigmoid(output_gate) * tf.tanh(c)
            new_states.append(tf.stack([x, c]))
        return tf.matmul(x, weights["head_kernel"]) + weights["head_bias"], tf.stack(new_states)


def _pack_lstm_weights(cell, units):
    """[W; U] of an LSTMCell as CharRnnLstmStep reads it: float32 [H / 16, in + H, 4 * 16], for each
    block of 16 units the 4 gates' 16 columns side by side."""
    stacked = tf.concat([tf.convert_to_tensor(cell.kernel), tf.convert_to_tensor(cell.recurrent_kernel)], 0)
    blocks = units // STEP_KERNEL_UNITS_MULTIPLE
    packed = tf.transpose(tf.reshape(stacked, [-1, 4, blocks, STEP_KERNEL_UNITS_MULTIPLE]), [2, 0, 1, 3])
    return tf.reshape(packed, [blocks, -1, 4 * STEP_KERNEL_UNITS_MULTIPLE])


def feed_prime(step_model, prime_ids, weights=None):
    """Runs the prime through the model from a zero state; traceable.

    Args:
      step_model: StepModel.
      prime_ids: int32 [B, P], P >= 1.
      weights: `step_model.read_weights()`; None reads them here.

    Returns:
      (logits float32 [B, V] after the last prime character, states float32 [L, S, B, H]).
    """
    weights = weights or step_model.read_weights()
    states = step_model.initial_state(tf.shape(prime_ids)[0])
    logits, states = step_model(prime_ids[:, 0], states, weights)
    for position in tf.range(1, tf.shape(prime_ids)[1]):
        logits, states = step_model(prime_ids[:, position], states, weights)
    return logits, states


def generate_ids(
    step_model, prime_ids, length, seed, mode="sample", space_id=-1, temperature=1.0, top_k=0, top_p=1.0
):
    """Feeds the prime, then samples `length` ids; traceable, so one tf.function runs it all.

    Args:
      step_model: StepModel.
      prime_ids: int32 [B, P], P >= 1.
      length: int32 scalar, characters to generate.
      seed, mode, space_id, temperature, top_k, top_p: see `choose_next`.

    Returns:
      int32 [B, length].
    """
    weights = step_model.read_weights()
    logits, states = feed_prime(step_model, prime_ids, weights)
    previous = prime_ids[:, -1]
    generated = tf.TensorArray(tf.int32, size=length)
    for step in tf.range(length):
        previous = choose_next(logits, seed, step, mode, previous, space_id, temperature, top_k, top_p)
        generated = generated.write(step, previous)
        logits, states = step_model(previous, states, weights)
    return tf.transpose(generated.stack())


class Sampler:
    """Generates text from a Char-RNN's weights: one compiled loop, or streamed a character at a time.

    Both paths run the same step model and the same seeded draws, so they give the same text.

    Args:
      model_config: ModelConfig of the weights to load into `self.model`.
      fused_kernels: step an LSTM with the fused CharRnnLstmStep kernel where it can be built.
    """

    def __init__(self, model_config, fused_kernels=True):
        self.model = model_lib.build_model(model_config, batch_size=1)
        # TensorFlow ops only, for a SavedModel; generation runs `fast_step_model`, the same weights.
        self.step_model = StepModel(self.model)
        self.fast_step_model = StepModel(self.model, native.load() if fused_kernels else None)
        self._compiled_generate = tf.function(functools.partial(generate_ids, self.fast_step_model))
        self._compiled_prime = tf.function(functools.partial(feed_prime, self.fast_step_model))
        self._compiled_read_weights = tf.function(self.fast_step_model.read_weights)
        self._compiled_step = tf.function(self._step)

    def _step(self, logits, states, previous, step, weights, seed, mode, space_id, temperature, top_k, top_p):
        ids = choose_next(logits, seed, step, mode, previous, space_id, temperature, top_k, top_p)
        logits, states = self.fast_step_model(ids, states, weights)
        return ids, logits, states

    @staticmethod
    def _arguments(vocab, prime, num_samples, seed, mode, temperature, top_k, top_p):
        unknown = vocab.unknown_chars(prime)
        if unknown:
            raise UserError(
                f"--prime has characters outside the run's vocabulary: {unknown!r}; "
                f"remove them or train on a corpus that has them"
            )
        if not prime:
            raise UserError("--prime must hold at least one character (the default is a newline)")
        prime_ids = tf.tile(vocab.encode(prime)[None, :], [num_samples, 1])
        space_id = vocab.chars.index(" ") if " " in vocab.chars else -1
        return prime_ids, dict(
            seed=tf.constant(seed, tf.int64),
            mode=mode,
            space_id=tf.constant(space_id),
            temperature=tf.constant(temperature, tf.float32),
            top_k=tf.constant(top_k, tf.int32),
            top_p=tf.constant(top_p, tf.float32),
        )

    def generate(
        self, vocab, prime, length, num_samples=1, seed=0, mode="sample", temperature=1.0, top_k=0, top_p=1.0
    ):
        """Generates `num_samples` continuations of `prime` in one compiled call; a list of strings."""
        prime_ids, options = self._arguments(vocab, prime, num_samples, seed, mode, temperature, top_k, top_p)
        ids = self._compiled_generate(prime_ids, tf.constant(length, tf.int32), **options)
        return [vocab.decode(row) for row in ids.numpy()]

    def stream(
        self, vocab, prime, length, num_samples=1, seed=0, mode="sample", temperature=1.0, top_k=0, top_p=1.0
    ):
        """Yields the generated characters one step at a time: a list of `num_samples` strings per step."""
        prime_ids, options = self._arguments(vocab, prime, num_samples, seed, mode, temperature, top_k, top_p)
        weights = self._compiled_read_weights()
        logits, states = self._compiled_prime(prime_ids, weights)
        previous = prime_ids[:, -1]
        for step in range(length):
            previous, logits, states = self._compiled_step(
                logits, states, previous, tf.constant(step), weights, **options
            )
            yield [vocab.chars[i] for i in previous.numpy()]


def load_sampler(train_dir, checkpoint=None, best=False):
    """A Sampler holding a run's weights (its latest, best-validation or named checkpoint).

    Returns:
      (Sampler, Vocab).
    """
    config, vocab = run_directory.load_run(train_dir)
    sampler = Sampler(config.model)
    run_directory.restore_weights(train_dir, sampler.model, checkpoint, best)
    return sampler, vocab
