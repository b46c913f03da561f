"""Property-based tests of the stream pipeline over random corpora, batch sizes, lengths and offsets."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tf_charrnn.data import pipeline, splits


@settings(max_examples=60, deadline=None)
@given(
    num_ids=st.integers(2, 3000),
    batch_size=st.integers(1, 6),
    seq_length=st.integers(1, 20),
    offset_seed=st.integers(0, 10**6),
    random_offset=st.booleans(),
)
def test_stream_batches_shift_continue_and_lose_only_the_remainder(
    num_ids, batch_size, seq_length, offset_seed, random_offset
):
    positions = np.arange(num_ids, dtype=np.int32)  # a corpus whose id is its own position
    num_batches = splits.num_stream_batches(num_ids, batch_size, seq_length, random_offset)
    if num_batches == 0:
        assert num_ids - 1 < batch_size * seq_length + (seq_length - 1 if random_offset else 0)
        return
    offset = int(pipeline.epoch_offset(offset_seed, 0, seq_length, random_offset))
    batches = list(pipeline.stream_dataset(positions, batch_size, seq_length, num_batches, offset))
    assert len(batches) == num_batches
    inputs = np.concatenate([x.numpy() for x, _ in batches], axis=1)  # [B, num_batches * T]
    targets = np.concatenate([y.numpy() for _, y in batches], axis=1)
    # Shift by one: every target is the corpus character right after its input.
    assert np.array_equal(targets, inputs + 1)
    # Continuity: each stream is one contiguous run, and stream i + 1 starts where stream i ends.
    assert (np.diff(inputs, axis=1) == 1).all()
    assert np.array_equal(inputs[1:, 0], inputs[:-1, -1] + 1)
    # Nothing lost but the remainder: the used positions are offset.. and fewer than one batch is left.
    used = inputs.reshape(-1)
    assert used[0] == offset and len(np.unique(used)) == used.size == num_batches * batch_size * seq_length
    left_over = (num_ids - 1 - offset) - used.size
    assert 0 <= left_over < batch_size * seq_length + (seq_length - 1 if random_offset else 0)
