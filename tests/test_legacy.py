"""A run directory and a SavedModel written by an earlier commit (tests/fixtures/README.md) still load,
sample the same text, export the same SavedModel and resume."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tf_charrnn.config import RunConfig
from tf_charrnn.export import saved_model
from tf_charrnn.inference import sampling
from tf_charrnn.model import native
from tf_charrnn.run import layout
from tf_charrnn.training import trainer

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
EXPECTED = json.load(open(os.path.join(FIXTURES, "legacy_expected.json"), encoding="utf-8"))


@pytest.fixture
def legacy_run(tmp_path):
    """A copy of the legacy run directory (tests may write into it) and of its corpus."""
    shutil.copytree(os.path.join(FIXTURES, "legacy_run"), tmp_path / "legacy_run")
    shutil.copy(os.path.join(FIXTURES, "legacy_corpus.txt"), tmp_path)
    return str(tmp_path / "legacy_run")


def _saved_model_outputs(path, vocab):
    loaded = tf.saved_model.load(path)
    text = loaded.signatures["serving_default"](
        prime=tf.constant("Willing "),
        length=tf.constant(80),
        temperature=tf.constant(0.7),
        seed=tf.constant(3, tf.int64),
    )["text"]
    state = loaded.signatures["initial_state"](batch_size=tf.constant(4))["states"]
    ids = tf.constant(vocab.encode(EXPECTED["step_ids"]))
    logits = loaded.signatures["step"](ids=ids, states=state)["logits"]
    return text.numpy().decode("utf-8"), logits.numpy()


def test_the_old_config_json_reads_into_sections(legacy_run):
    config, vocab = layout.load_run(legacy_run)
    with open(os.path.join(legacy_run, "config.json"), encoding="utf-8") as f:
        old = json.load(f)
    flat_old = {name: value for section in old.values() for name, value in section.items()}
    # Fields added since take their defaults, except those that record what such runs had: Keras'
    # embedding, every stream's state carried.
    had = {"embedding_initializer": "uniform", "state_reset_probability": 0.0}
    assert config.flat() == {**RunConfig().flat(), **had, **flat_old}
    assert config.model.vocab_size == len(vocab) == 22
    assert config.layout.batch_size == 4 and config.optimization.seed == 5


@pytest.mark.skipif(native.load() is None, reason="the fused kernels cannot be built here")
def test_the_sampler_on_the_kernels_gives_the_old_text(legacy_run):
    # The recorded texts came from that commit's sampler, which stepped the LSTM on the fused kernel.
    sampler, vocab = sampling.load_sampler(legacy_run, fused_kernels=True)
    decoding = sampling.Decoding(seed=3, temperature=0.7)
    assert sampler.generate(vocab, "Willing ", 80, decoding, num_samples=2) == EXPECTED["sample"]
    assert sampler.generate(vocab, "Willing ", 60, sampling.Decoding("greedy"))[0] == EXPECTED["greedy"]


def test_the_tensorflow_step_gives_the_old_savedmodel_text(legacy_run):
    sampler, vocab = sampling.load_sampler(legacy_run, fused_kernels=False)
    text = sampler.generate(vocab, "Willing ", 80, sampling.Decoding(seed=3, temperature=0.7))[0]
    assert text == EXPECTED["saved_model_text"]


def test_a_config_json_without_vocab_size_takes_vocab_json_s(legacy_run):
    # A config.json written or edited by hand may leave vocab_size out: the run's vocabulary sizes the model.
    path = os.path.join(legacy_run, "config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    del config["model"]["vocab_size"]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f)
    assert layout.load_run(legacy_run)[0].model.vocab_size == 22
    sampler, vocab = sampling.load_sampler(legacy_run, fused_kernels=False)
    text = sampler.generate(vocab, "Willing ", 80, sampling.Decoding(seed=3, temperature=0.7))[0]
    assert text == EXPECTED["saved_model_text"]


def test_old_and_new_savedmodels_agree(legacy_run, tmp_path):
    _, vocab = layout.load_run(legacy_run)
    new_export = saved_model.export_run(legacy_run, str(tmp_path / "new_export"))
    for path in (os.path.join(FIXTURES, "legacy_export"), new_export):
        text, logits = _saved_model_outputs(path, vocab)
        assert text == EXPECTED["saved_model_text"]
        np.testing.assert_allclose(logits, EXPECTED["step_logits"], rtol=0, atol=1e-5)


def test_the_old_run_resumes(legacy_run, corpus_cache):
    config, _ = layout.load_run(legacy_run)
    config = config.replace(
        train_dir=legacy_run,
        data_path=os.path.join(os.path.dirname(legacy_run), "legacy_corpus.txt"),
        cache_dir=corpus_cache,
        max_steps=63,
    )
    result = trainer.train(config)
    assert result.step == 63 and len(result.losses) == 3  # steps 61-63 only: it resumed at step 60
    assert all(np.isfinite(result.losses))
    with open(config.data.data_path, "rb") as f:
        corpus = f.read()
    digest = hashlib.sha256(corpus).hexdigest()
    recorded = config.replace(
        corpus_sha256=digest, corpus_size=len(corpus), corpus_files=(f"{digest}  legacy_corpus.txt",)
    )
    assert layout.load_run(legacy_run)[0] == recorded  # config.json rewritten in sections, corpus recorded
