import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import make_config
from tf_charrnn.config import ModelConfig
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.errors import UserError
from tf_charrnn.inference import sample_text, sampling
from tf_charrnn.inference.sampling import Decoding
from tf_charrnn.model.char_rnn import CharRNN
from tf_charrnn.training import trainer

LOGITS = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], dtype=np.float32))


def test_temperature_scales_logits():
    np.testing.assert_allclose(
        sampling.filter_logits(LOGITS, temperature=0.5).numpy(), LOGITS / 0.5, rtol=1e-6
    )


@pytest.mark.parametrize("top_k, kept", [(0, 4), (1, 1), (2, 2), (3, 3), (9, 4)])
def test_top_k_keeps_the_k_most_likely(top_k, kept):
    filtered = sampling.filter_logits(LOGITS, top_k=top_k).numpy()[0]
    assert np.isfinite(filtered).tolist() == [True] * kept + [False] * (4 - kept)


@pytest.mark.parametrize("top_p, kept", [(1.0, 4), (0.5, 1), (0.7, 2), (0.8, 2), (0.81, 3), (0.96, 4)])
def test_top_p_keeps_the_smallest_set_reaching_the_mass(top_p, kept):
    filtered = sampling.filter_logits(LOGITS, top_p=top_p).numpy()[0]
    assert np.isfinite(filtered).tolist() == [True] * kept + [False] * (4 - kept)


def test_top_k_one_equals_greedy():
    logits = np.random.default_rng(0).normal(size=(16, 30)).astype(np.float32)
    greedy = sampling.choose_next(logits, 0, Decoding("greedy")).numpy()
    assert greedy.tolist() == np.argmax(logits, axis=-1).tolist()
    for seed in range(5):
        assert (
            sampling.choose_next(logits, 3, Decoding(seed=seed, top_k=1)).numpy().tolist() == greedy.tolist()
        )


def test_sample_at_space_draws_only_after_a_space():
    logits = np.tile(np.log(np.array([[0.4, 0.3, 0.3]], dtype=np.float32)), (400, 1))
    space_id = 2
    previous = np.array([space_id, 0] * 200, dtype=np.int32)
    chosen = sampling.choose_next(logits, 1, Decoding("sample_at_space", seed=9), previous, space_id).numpy()
    sampled = sampling.choose_next(logits, 1, Decoding(seed=9)).numpy()
    assert (chosen[1::2] == 0).all()  # argmax after a non-space
    assert chosen[0::2].tolist() == sampled[0::2].tolist()  # the seeded draw after a space
    assert len(set(chosen[0::2].tolist())) == 3


def test_fixed_seed_gives_exact_draws():
    logits = np.tile(LOGITS, (8, 1))
    first = sampling.choose_next(logits, 7, Decoding(seed=1234)).numpy().tolist()
    assert first == sampling.choose_next(logits, 7, Decoding(seed=1234)).numpy().tolist()
    assert first == [3, 2, 1, 0, 0, 0, 0, 0]  # pinned on TF 2.21: stateless draws are stable per version
    assert first != sampling.choose_next(logits, 7, Decoding(seed=1235)).numpy().tolist()


def test_sampled_frequencies_follow_the_softmax():
    logits = np.array([[2.0, 1.0, 0.5, 0.0, -1.0]], dtype=np.float32)
    draws = 40000
    chosen = sampling.choose_next(np.tile(logits, (draws, 1)), 0, Decoding(seed=3, temperature=1.0)).numpy()
    observed = np.bincount(chosen, minlength=5)
    expected = draws * tf.nn.softmax(logits[0]).numpy()
    chi_square = float(((observed - expected) ** 2 / expected).sum())
    assert chi_square < 18.47  # 4 degrees of freedom, p = 0.001
    hot = sampling.choose_next(np.tile(logits, (draws, 1)), 0, Decoding(seed=3, temperature=0.5)).numpy()
    expected_hot = draws * tf.nn.softmax(logits[0] / 0.5).numpy()
    assert float(((np.bincount(hot, minlength=5) - expected_hot) ** 2 / expected_hot).sum()) < 18.47


MODEL = ModelConfig(vocab_size=7, embedding_dim=5, rnn_units=12, num_layers=2, dropout=0.0)
VOCAB = Vocab(list("abc d\n!"))


@pytest.fixture(scope="module")
def sampler():
    sampler = sampling.Sampler(MODEL, fused_kernels=True)
    keras.utils.set_random_seed(1)  # the initialisers draw from Keras' global seed: same weights every run
    source = CharRNN(MODEL, batch_size=3, seed=4, fused_kernels=True)
    # Larger random weights than the initialiser's, so the distributions are far from uniform.
    source.set_weights([w * 3.0 for w in source.get_weights()])
    sampler.model.copy_weights_from(source)
    return sampler


def test_stream_yields_the_first_character_after_one_step_then_steps_in_growing_calls(sampler, monkeypatch):
    counts = []
    compiled_steps = sampler._compiled_steps

    def counted(*args):
        counts.append(int(args[4]))
        return compiled_steps(*args)

    monkeypatch.setattr(sampler, "_compiled_steps", counted)
    steps = sampler.stream(VOCAB, "ab c", 100, Decoding(seed=3))
    next(steps)
    assert counts == [1]
    assert len(list(steps)) == 99
    assert counts == [1, 2, 4, 8, 16, 32, 32, 5]  # at most sampling.STREAM_CHUNK a call


@pytest.mark.parametrize("mode", ["sample", "greedy", "sample_at_space"])
def test_compiled_and_streamed_give_the_same_text(sampler, mode):
    options = dict(num_samples=3, decoding=Decoding(mode, seed=11, temperature=0.9, top_k=5, top_p=0.95))
    compiled = sampler.generate(VOCAB, "ab c", 60, **options)
    streamed = ["".join(column) for column in zip(*sampler.stream(VOCAB, "ab c", 60, **options), strict=True)]
    assert compiled == streamed
    assert compiled == sampler.generate(VOCAB, "ab c", 60, **options)
    assert all(len(text) == 60 for text in compiled)
    if mode == "sample":
        assert len(set(compiled)) == 3  # rows draw independently
    if mode == "greedy":
        assert len(set(compiled)) == 1


def test_greedy_equals_the_argmax_chain_of_the_keras_model(sampler):
    stateful = CharRNN(MODEL, batch_size=1, fused_kernels=True)
    stateful.copy_weights_from(sampler.model)
    logits = stateful(VOCAB.encode("ab c")[None, :])[:, -1]
    expected = []
    for _ in range(40):
        next_id = int(np.argmax(logits[0]))
        expected.append(next_id)
        logits = stateful(np.array([[next_id]], dtype=np.int32))[:, -1]
    assert sampler.generate(VOCAB, "ab c", 40, Decoding("greedy"))[0] == VOCAB.decode(expected)


def test_prime_errors(sampler):
    with pytest.raises(UserError, match=r"outside the run's vocabulary: \['x', 'é'\]"):
        sampler.generate(VOCAB, "axé", 5)
    with pytest.raises(UserError, match="at least one character"):
        sampler.generate(VOCAB, "", 5)
    assert sampler.generate(VOCAB, "a", 0) == [""]


def test_korean_prime_on_a_korean_run(text_file, corpus_cache, tmp_path):
    text = "서울은 한국의 수도이다. 부산은 항구 도시이다. 😀 " * 40
    config = make_config(
        text_file(text),
        corpus_cache,
        tmp_path / "run",
        batch_size=2,
        seq_length=16,
        embedding_dim=8,
        rnn_units=32,
        num_layers=1,
        dropout=0.0,
        max_steps=30,
        learning_rate=0.01,
        eval_every=30,
        sample_length=10,
    )
    trainer.train(config)
    korean_sampler, vocab = sampling.load_sampler(str(tmp_path / "run"), fused_kernels=True)
    texts = korean_sampler.generate(vocab, "서울은", 30, Decoding(seed=1), num_samples=2)
    assert all(len(t) == 30 and set(t) <= set(text) for t in texts)


@pytest.mark.parametrize("stop_at", ["d", "c ", "!!", "\n"])
def test_stop_at_ends_each_sample_at_its_first_occurrence_compiled_and_streamed(sampler, stop_at):
    options = dict(num_samples=5, decoding=Decoding(seed=3, temperature=1.3))
    full = sampler.generate(VOCAB, "ab d", 80, **options)
    expected = [text[: text.find(stop_at) + len(stop_at)] if stop_at in text else text for text in full]
    compiled = sampler.generate(VOCAB, "ab d", 80, stop_at=stop_at, **options)
    streamed = [
        "".join(column)
        for column in zip(*sampler.stream(VOCAB, "ab d", 80, stop_at=stop_at, **options), strict=True)
    ]
    assert compiled == expected  # per sample: the others draw on as if nothing stopped
    assert streamed == expected
    assert any(text.endswith(stop_at) for text in compiled)  # the case is not vacuous


def test_stop_at_ends_the_loop_once_every_sample_has_stopped(sampler):
    # Greedy rows are all the same text: once it holds the stop string, no step is left to run.
    text = sampler.generate(VOCAB, "ab c", 200, Decoding("greedy"))[0]
    stop_at = text[5:7]
    first = text.find(stop_at) + len(stop_at)
    prime_ids = tf.constant(VOCAB.encode("ab c")[None, :].repeat(3, axis=0))
    ids = sampling.generate_ids(
        sampler.model, prime_ids, 200, Decoding("greedy"), stop_ids=VOCAB.encode(stop_at)
    )
    assert ids.shape == (3, first) and VOCAB.decode(ids.numpy()[0]) == text[:first]


def test_stop_at_outside_the_vocabulary_is_refused(sampler):
    with pytest.raises(UserError, match=r"--stop_at has characters outside the run's vocabulary: \['z'\]"):
        sampler.generate(VOCAB, "a", 5, stop_at="az")


def test_samples_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "samples.txt"
    sample_text.write_samples(str(path), "ab", ["c d", "dd"])
    assert path.read_text(encoding="utf-8") == "--- sample 1 ---\nabc d\n--- sample 2 ---\nabdd\n"

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sample_text.files.os, "fsync", full_disk)
    with pytest.raises(OSError):
        sample_text.write_samples(str(path), "ab", ["a much longer text that never lands"])
    assert path.read_text(encoding="utf-8") == "--- sample 1 ---\nabc d\n--- sample 2 ---\nabdd\n"
    assert os.listdir(tmp_path) == ["samples.txt"]  # no temporary file left


def test_prime_file_is_read_whole_and_checked(tmp_path):
    path = tmp_path / "prime.txt"
    path.write_text("ROMEO:\nO, she doth teach\n", encoding="utf-8")
    assert sample_text.read_prime_file(str(path)) == "ROMEO:\nO, she doth teach\n"
    path.write_bytes(b"caf\xe9")
    with pytest.raises(UserError, match=r"--prime_file .* is not valid UTF-8 at byte 3"):
        sample_text.read_prime_file(str(path))
    path.write_bytes(b"")
    with pytest.raises(UserError, match=r"--prime_file .* is empty"):
        sample_text.read_prime_file(str(path))
    with pytest.raises(UserError, match=r"--prime_file .* is a folder"):
        sample_text.read_prime_file(str(tmp_path))
