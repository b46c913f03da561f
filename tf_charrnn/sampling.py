"""Text generation: pure, seeded sampling strategies on logits, and a stateful sampler compiled as one loop.

Random draws use stateless ops keyed by (seed, step), so the same seed gives the same text.
"""
import tensorflow as tf

from tf_charrnn import model as model_lib

SAMPLING_MODES = ("sample", "greedy", "sample_at_space")


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


def choose_next(logits, seed, step, mode="sample", previous_ids=None, space_id=-1,
                temperature=1.0, top_k=0, top_p=1.0):
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
    filtered = filter_logits(logits, temperature, top_k, top_p)
    draw_seed = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
    sampled = tf.cast(tf.random.stateless_categorical(filtered, 1, seed=draw_seed)[:, 0], tf.int32)
    if mode == "sample":
        return sampled
    if mode == "sample_at_space":
        return tf.where(tf.equal(previous_ids, space_id), sampled, greedy)
    raise ValueError(f"unknown sampling mode {mode!r}; use one of {', '.join(SAMPLING_MODES)}")


class Sampler:
    """A stateful model of a fixed batch size that generates text in one compiled loop."""

    def __init__(self, model_config, batch_size=1):
        self.batch_size = batch_size
        self.model = model_lib.build_model(model_config, batch_size)
        self._compiled = tf.function(self._generate_ids)

    def _generate_ids(self, prime_ids, length, seed, mode, space_id, temperature, top_k, top_p):
        logits = self.model(prime_ids, training=False)[:, -1, :]
        previous = prime_ids[:, -1]
        generated = tf.TensorArray(tf.int32, size=length)
        for step in tf.range(length):
            previous = choose_next(logits, seed, step, mode, previous, space_id, temperature, top_k, top_p)
            generated = generated.write(step, previous)
            logits = self.model(previous[:, None], training=False)[:, 0, :]
        return tf.transpose(generated.stack())

    def generate_ids(self, prime_ids, length, seed=0, mode="sample", space_id=-1,
                     temperature=1.0, top_k=0, top_p=1.0):
        """Resets the state, feeds the prime in one call, then generates `length` ids in one loop.

        Args:
          prime_ids: int32 [P] or [B, P] ids (P >= 1) that set the state first.
          length, seed, mode, space_id, temperature, top_k, top_p: see `choose_next`.

        Returns:
          int32 numpy [B, length].
        """
        prime_ids = tf.convert_to_tensor(prime_ids, dtype=tf.int32)
        if prime_ids.shape.rank == 1:
            prime_ids = tf.tile(prime_ids[None, :], [self.batch_size, 1])
        model_lib.reset_states(self.model)
        return self._compiled(prime_ids, tf.constant(length, tf.int32), tf.constant(seed, tf.int64), mode,
                              tf.constant(space_id, tf.int32), tf.constant(temperature, tf.float32),
                              tf.constant(top_k, tf.int32), tf.constant(top_p, tf.float32)).numpy()

    def generate(self, vocab, prime, length, seed=0, mode="sample", temperature=1.0, top_k=0, top_p=1.0):
        """Generates `batch_size` texts that continue `prime`; returns a list of strings."""
        space_id = vocab.chars.index(" ") if " " in vocab.chars else -1
        ids = self.generate_ids(vocab.encode(prime), length, seed, mode, space_id, temperature, top_k, top_p)
        return [vocab.decode(row) for row in ids]
