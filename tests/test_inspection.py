"""inspection/features.py and saturation.py: text features by hand, correlations, the search finding
the hand-set cells of helpers.hand_model first, and the gate statistics of saturated gates."""

import numpy as np
import pytest

from helpers import LINE_CELL, QUOTE_CELL, STEP, hand_model, hand_text
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.inference import activations
from tf_charrnn.inspection import features, saturation


def test_features_of_a_short_text():
    values = features.text_features('a "b(c)"\nd\'s x')
    assert values["in_quote"].tolist() == [0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert values["line_position"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3, 4, 5]
    assert values["bracket_depth"].tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert values["word_position"].tolist() == [1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 2, 3, 0, 1]
    assert values["line_start"].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert set(values) == set(features.FEATURES)
    assert all(value.dtype == np.float32 for value in values.values())


def test_correlations_are_pearsons_r_and_zero_for_constants():
    rng = np.random.default_rng(0)
    feature = rng.normal(size=50)
    values = np.stack([feature * 3 + 1, -feature, rng.normal(size=50), np.full(50, 0.7)], axis=1)
    r = features.correlations(values.astype(np.float32), feature[None, :])
    assert r.shape == (1, 4)
    assert r[0, 0] == pytest.approx(1, abs=1e-6) and r[0, 1] == pytest.approx(-1, abs=1e-6)
    assert r[0, 2] == pytest.approx(np.corrcoef(values[:, 2], feature)[0, 1], abs=1e-6)
    assert r[0, 3] == 0
    assert features.correlations(values, np.zeros([1, 50])).tolist() == [[0, 0, 0, 0]]


@pytest.fixture(scope="module")
def hand_activations():
    text = hand_text()
    vocab = Vocab.from_text(text)
    model = hand_model(vocab)
    return activations.compute_activations(model, vocab.encode(text), text, streams=1)


def test_the_hand_set_cells_track_their_features_exactly(hand_activations):
    values = features.text_features(hand_activations.text)
    c = hand_activations["lstm_1/c"]
    np.testing.assert_allclose(c[:, QUOTE_CELL], values["in_quote"], atol=1e-5)
    first_break = hand_activations.text.index("\n")  # the first line starts from c = 0, not STEP
    np.testing.assert_allclose(
        c[:first_break, LINE_CELL], STEP * values["line_position"][:first_break], atol=1e-4
    )
    np.testing.assert_allclose(
        c[first_break:, LINE_CELL], STEP * (values["line_position"][first_break:] + 1), atol=1e-4
    )


def test_the_search_ranks_the_hand_set_cells_first(hand_activations):
    states = {("lstm_1", state): hand_activations[f"lstm_1/{state}"] for state in ("h", "c")}
    ranking = features.rank_cells(states, features.text_features(hand_activations.text), top=3)
    best_quote, best_line = ranking["in_quote"][0], ranking["line_position"][0]
    assert (best_quote.layer, best_quote.cell) == ("lstm_1", QUOTE_CELL) and best_quote.correlation > 0.95
    assert (best_line.layer, best_line.cell) == ("lstm_1", LINE_CELL) and best_line.correlation > 0.95
    assert best_line.state == "c" and best_line.correlation > 0.999  # the first line is off by one STEP
    assert best_quote.name.startswith("lstm_1/") and best_quote.name.endswith("/0")
    assert set(ranking) == set(features.FEATURES)
    assert all(len(scores) == 3 for scores in ranking.values())


def test_a_constant_feature_ranks_nothing(hand_activations):
    states = {("lstm_1", "c"): hand_activations["lstm_1/c"]}
    ranking = features.rank_cells(states, {"in_quote": np.zeros(len(hand_activations.text))}, top=3)
    assert ranking == {"in_quote": []}


def test_saturated_gates_come_out_as_one(hand_activations):
    stats = saturation.gate_saturation(hand_activations)
    assert set(stats) == {("lstm_1", gate) for gate in ("input", "forget", "output")}
    left, right = stats["lstm_1", "output"]
    assert right.tolist() == [1.0] * 4 and left.tolist() == [0.0] * 4
    left, right = stats["lstm_1", "forget"]
    assert right[QUOTE_CELL] == 1.0 and left[QUOTE_CELL] == 0.0
    left, right = stats["lstm_1", "input"]
    assert right[LINE_CELL] == 1.0
    quotes = hand_activations.text.count('"') / len(hand_activations.text)
    assert right[QUOTE_CELL] == pytest.approx(quotes) and left[QUOTE_CELL] == pytest.approx(1 - quotes)
    # A gate at sigmoid(0) = 0.5 (the unused cells) is saturated on no character.
    assert left[3] == right[3] == 0.0
