"""Text generation: pure, seeded sampling strategies on logits, and the generation loop on the model's
`step` (compiled as one loop, or streamed a character at a time).

Random draws use stateless ops keyed by (seed, step), so the same seed gives the same text.
"""

import functools

import tensorflow as tf

from tf_charrnn import run_directory
from tf_charrnn.config import SAMPLING_MODES
from tf_charrnn.errors import UserError
from tf_charrnn.model import CharRNN


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


def feed_prime(model, prime_ids, weights=None):
    """Runs the prime through the model's step from a zero state; traceable.

    Args:
      model: CharRNN.
      prime_ids: int32 [B, P], P >= 1.
      weights: `model.step_weights()`; None reads them here.

    Returns:
      (logits float32 [B, V] after the last prime character, state float32 [L, S, B, H]).
    """
    weights = weights or model.step_weights()
    state = model.initial_state(tf.shape(prime_ids)[0])
    logits, state = model.step(prime_ids[:, 0], state, weights)
    for position in tf.range(1, tf.shape(prime_ids)[1]):
        logits, state = model.step(prime_ids[:, position], state, weights)
    return logits, state


def generate_ids(
    model, prime_ids, length, seed, mode="sample", space_id=-1, temperature=1.0, top_k=0, top_p=1.0
):
    """Feeds the prime, then samples `length` ids; traceable, so one tf.function runs it all.

    Args:
      model: CharRNN.
      prime_ids: int32 [B, P], P >= 1.
      length: int32 scalar, characters to generate.
      seed, mode, space_id, temperature, top_k, top_p: see `choose_next`.

    Returns:
      int32 [B, length].
    """
    weights = model.step_weights()
    logits, state = feed_prime(model, prime_ids, weights)
    previous = prime_ids[:, -1]
    generated = tf.TensorArray(tf.int32, size=length)
    for step in tf.range(length):
        previous = choose_next(logits, seed, step, mode, previous, space_id, temperature, top_k, top_p)
        generated = generated.write(step, previous)
        logits, state = model.step(previous, state, weights)
    return tf.transpose(generated.stack())


class Sampler:
    """Generates text from a Char-RNN's weights: one compiled loop, or streamed a character at a time.

    Both paths run the model's step and the same seeded draws, so they give the same text.

    Args:
      model_config: ModelConfig of the weights to load into `self.model` (batch 1; `step` takes any).
      fused_kernels: the model steps its LSTM layers on the fused kernel (the runtime decides).
    """

    def __init__(self, model_config, fused_kernels=False):
        self.model = CharRNN(model_config, batch_size=1, fused_kernels=fused_kernels)
        self._compiled_generate = tf.function(functools.partial(generate_ids, self.model))
        self._compiled_prime = tf.function(functools.partial(feed_prime, self.model))
        self._compiled_step_weights = tf.function(self.model.step_weights)
        self._compiled_step = tf.function(self._step)

    def _step(self, logits, state, previous, step, weights, seed, mode, space_id, temperature, top_k, top_p):
        ids = choose_next(logits, seed, step, mode, previous, space_id, temperature, top_k, top_p)
        logits, state = self.model.step(ids, state, weights)
        return ids, logits, state

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
        return prime_ids, dict(
            seed=tf.constant(seed, tf.int64),
            mode=mode,
            space_id=tf.constant(vocab.space_id),
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
        weights = self._compiled_step_weights()
        logits, state = self._compiled_prime(prime_ids, weights)
        previous = prime_ids[:, -1]
        for step in range(length):
            previous, logits, state = self._compiled_step(
                logits, state, previous, tf.constant(step), weights, **options
            )
            yield [vocab.chars[i] for i in previous.numpy()]


def load_sampler(train_dir, checkpoint=None, best=False, fused_kernels=False):
    """A Sampler holding a run's weights (its latest, best-validation or named checkpoint).

    Returns:
      (Sampler, Vocab).
    """
    config, vocab = run_directory.load_run(train_dir)
    sampler = Sampler(config.model, fused_kernels)
    run_directory.restore_weights(train_dir, sampler.model, checkpoint, best)
    return sampler, vocab
