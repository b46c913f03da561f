"""scripts/reproduce.py and tf_charrnn.reproduction: the grid end to end on a tiny corpus (killed and
resumed), its table, the n-gram baseline against a hand computation, the held-out test split."""

import math
import os
import signal
import time

import numpy as np
import pytest

from helpers import QUOTE, run_command, script_command, script_env, snapshot, start_command

# The protocol of the tests: the shipped one's split, shrunk to seconds.
TINY_PROTOCOL = """--val_fraction=0.1
--test_fraction=0.1
--batch_size=4
--seq_length=16
--embedding_dim=8
--dropout=0.0
--learning_rate=0.01
--num_epochs=1
--eval_every=2
--ckpt_every=2
--log_every=2
--sample_length=0
"""


@pytest.fixture
def grid_world(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((QUOTE + "\n") * 40, encoding="utf-8")
    protocol = tmp_path / "tiny.cfg"
    protocol.write_text(TINY_PROTOCOL, encoding="utf-8")
    args = [
        f"--corpus={corpus}",
        f"--out_dir={tmp_path / 'grid'}",
        f"--protocol={protocol}",
        "--cells=lstm,gru",
        "--layers=1",
        "--sizes=8",
        "--max_steps=4",  # of the protocol's one epoch, 36 steps
    ]
    return tmp_path, args, script_env(tmp_path / "cache")


def test_grid_is_killed_resumed_and_tabled(grid_world):
    root, args, env = grid_world
    first = root / "grid" / "lstm_1x8" / "result.json"
    process, _ = start_command(script_command("reproduce.py", *args), env)
    deadline = time.monotonic() + 120
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.exists(), "the first cell never finished"
    process.send_signal(signal.SIGKILL)  # mid-grid: the second cell is training or about to
    process.wait()
    finished_at = first.stat().st_mtime_ns

    resumed = run_command(script_command("reproduce.py", *args), env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert first.stat().st_mtime_ns == finished_at  # the finished cell was read back, not retrained
    assert "Cell gru_1x8" in resumed.stderr and "Training 4 steps" in resumed.stderr
    table = (root / "grid" / "table.md").read_text(encoding="utf-8")
    rows = [line for line in table.splitlines() if line.startswith(("| LSTM", "| GRU"))]
    assert len(rows) == 2
    for row in rows:
        fields = [field.strip() for field in row.strip("|").split("|")]
        assert fields[1:3] == ["1", "8"] and fields[4] == "n/a" and fields[6] == "4"
        assert 0 < float(fields[3]) < 5 and fields[9] == "capped: 4 of the protocol's 36 steps"
    assert "| 20-gram, interpolated Kneser-Ney |" in table and "| 1.195 |" in table
    assert "| best LSTM |" in table and "| 1.077 |" in table
    assert (root / "grid" / "table.png").stat().st_size > 1000

    # A higher cap trains the capped cells on from their checkpoints, not from scratch.
    longer = [arg if arg != "--max_steps=4" else "--max_steps=8" for arg in args]
    extended = run_command(script_command("reproduce.py", *longer), env, timeout=300)
    assert extended.returncode == 0, extended.stderr
    assert extended.stderr.count("Training 8 steps") == 2 and extended.stderr.count("from step 4") == 2
    table = (root / "grid" / "table.md").read_text(encoding="utf-8")
    assert table.count("| capped: 8 of the protocol's 36 steps |") == 2


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--table=karpathy2016"], "error: --table must be one of karpathy2015"),
        (["--cells=lstm,transformer"], "error: --cells must name cells of lstm, gru, rnn"),
        (["--layers=1,two"], "error: --layers must be a comma-separated list of positive integers"),
        (["--sizes=0"], "error: --sizes must be a comma-separated list of positive integers"),
        (["--corpus=/no/such/file.txt"], "error: --corpus=/no/such/file.txt is no file"),
        (["--out_dir=OTHER"], "is not empty and holds no grid; pass an empty or new --out_dir"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(grid_world, flags, message):
    root, args, env = grid_world
    other = root / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine", encoding="utf-8")
    flags = [flag.replace("OTHER", str(other)) for flag in flags]
    before = snapshot(root)
    result = run_command(script_command("reproduce.py", *args, *flags), env, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error:"), result.stderr
    assert message in result.stderr
    assert snapshot(root) == before
    assert not os.path.exists(root / "grid")


def test_ngram_equals_a_hand_computation():
    from tf_charrnn.reproduction import ngram

    # Trained on "abab" (a=0, b=1), order 2, scored on "abb". Bigram counts ab: 2, ba: 1, so D2 = 1/3
    # (one count of 1, one of 2). Unigram continuation counts a: 1, b: 1, so D1 = 1 and P1 = 1/2.
    # After "a": (2 - 1/3 + 1/3 * 1 * 1/2) / 2 = 11/12; after "b": (0 + 1/3 * 1 * 1/2) / 1 = 1/6.
    # The first character has no context (P1 = 1/2) and is not predicted.
    model = ngram.KneserNey(np.array([0, 1, 0, 1]), vocab_size=2, order=2)
    np.testing.assert_allclose(model.probabilities(np.array([0, 1, 1])), [1 / 2, 11 / 12, 1 / 6])
    expected = -(math.log(11 / 12) + math.log(1 / 6)) / 2
    assert model.nats_per_char(np.array([0, 1, 1])) == pytest.approx(expected)


def test_test_split_is_held_out_at_the_end_and_old_splits_are_unchanged():
    from tf_charrnn.config import LayoutConfig
    from tf_charrnn.data.encoded import Corpus
    from tf_charrnn.data.splits import split_corpus, split_ids
    from tf_charrnn.data.vocab import Vocab

    ids = np.arange(1000) % 7
    corpus = Corpus(Vocab("abcdefg"), ids, "", 0)
    held = split_corpus(corpus, LayoutConfig(batch_size=2, seq_length=4, val_fraction=0.1, test_fraction=0.1))
    assert (len(held.train_ids), len(held.val_ids), len(held.test_ids)) == (800, 100, 100)
    np.testing.assert_array_equal(np.concatenate([held.train_ids, held.val_ids, held.test_ids]), ids)
    # Training reads train_ids, validation val_ids: neither reaches the last 100 ids, the test split.
    old = split_corpus(corpus, LayoutConfig(batch_size=2, seq_length=4, val_fraction=0.1))
    train, val = split_ids(ids, 0.1)
    np.testing.assert_array_equal(old.train_ids, train)
    np.testing.assert_array_equal(old.val_ids, val)
    assert len(old.test_ids) == 0
