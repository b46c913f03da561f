"""A character n-gram model with interpolated Kneser-Ney smoothing, counted and scored in numpy.

Contexts are keyed by a 64-bit polynomial hash of their characters (a collision among a few million
contexts has a probability near 1e-7), so each order's counts are a few sorted arrays.
"""

import numpy as np

_BASE = np.uint64(1_000_003)  # hash multiplier (odd, larger than any vocabulary)


def _context_hashes(ids: np.ndarray, length: int) -> np.ndarray:
    """uint64 [N]: hash of the `length` characters before each position (fewer at the start)."""
    hashes = np.zeros(len(ids), np.uint64)
    shifted = ids.astype(np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        for back in range(1, length + 1):
            hashes[back:] = hashes[back:] * _BASE + shifted[:-back]
    return hashes


def _pair_keys(contexts: np.ndarray, ids: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return contexts * _BASE + ids.astype(np.uint64) + np.uint64(1)


def _lookup(keys: np.ndarray, counts: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """counts[i] where keys[i] == query, else 0 (keys sorted)."""
    where = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return np.where(keys[where] == queries, counts[where], 0)


class KneserNey:
    """An order-`order` character model, interpolated Kneser-Ney (Chen and Goodman 1998, one discount
    per order):

        P_n(c|h) = (max(c(h, c) - D_n, 0) + D_n u(h) P_{n-1}(c|h')) / c(h)

    with h' the context one character shorter, u(h) the distinct characters seen after h, and c the
    counts at the highest order, continuation counts (distinct characters before h c) below it;
    D_n = n1 / (n1 + 2 n2) from the counts seen once and twice. An unseen context falls back to
    P_{n-1}; order 0 is uniform over the vocabulary.

    Args:
      train_ids: int [N], the training text's ids.
      vocab_size: V.
      order: n (the paper's baseline: 20).
    """

    def __init__(self, train_ids: np.ndarray, vocab_size: int, order: int) -> None:
        self.vocab_size = vocab_size
        self._tables = []
        for length in range(order):
            contexts = _context_hashes(train_ids, length)
            pairs = _pair_keys(contexts, train_ids)
            if length == order - 1:  # counts of the full context
                contexts, pairs = contexts[length:], pairs[length:]
            else:  # continuation counts: one per distinct character before the pair
                longer = _pair_keys(_context_hashes(train_ids, length + 1), train_ids)
                _, first = np.unique(longer[length + 1 :], return_index=True)
                contexts, pairs = contexts[length + 1 :][first], pairs[length + 1 :][first]
            pair_keys, first_pair, pair_counts = np.unique(pairs, return_index=True, return_counts=True)
            context_keys, context_counts = np.unique(contexts, return_counts=True)
            _, followers = np.unique(contexts[first_pair], return_counts=True)
            once, twice = np.sum(pair_counts == 1), np.sum(pair_counts == 2)
            discount = once / max(once + 2 * twice, 1)
            self._tables.append((pair_keys, pair_counts, context_keys, context_counts, followers, discount))

    def probabilities(self, ids: np.ndarray) -> np.ndarray:
        """float64 [N]: P(ids[t] | the up to order - 1 ids before t within `ids`)."""
        probs = np.full(len(ids), 1.0 / self.vocab_size)
        for length, (pair_keys, pair_counts, context_keys, context_counts, followers, discount) in enumerate(
            self._tables
        ):
            contexts = _context_hashes(ids, length)
            seen = _lookup(context_keys, context_counts, contexts).astype(np.float64)
            distinct = _lookup(context_keys, followers, contexts).astype(np.float64)
            joint = _lookup(pair_keys, pair_counts, _pair_keys(contexts, ids)).astype(np.float64)
            full = np.arange(len(ids)) >= length  # a shorter context at the start keeps the lower order
            mixed = (np.maximum(joint - discount, 0.0) + discount * distinct * probs) / np.maximum(seen, 1.0)
            probs = np.where(full & (seen > 0), mixed, probs)
        return probs

    def nats_per_char(self, ids: np.ndarray) -> float:
        """Mean cross-entropy of `ids` (int [N], N >= 2), predicting ids[1:] as the networks are scored."""
        return float(-np.mean(np.log(self.probabilities(ids)[1:])))
