import hashlib
import io
import logging
import os
import urllib.error

import numpy as np
import pytest

from tf_charrnn.config import DataConfig
from tf_charrnn.data import encoded, pipeline, sources, splits
from tf_charrnn.errors import UserError


def _batches(ids, batch_size, seq_length, offset=0, start_batch=0, random_offset=False):
    num_batches = splits.num_stream_batches(len(ids), batch_size, seq_length, random_offset)
    dataset = pipeline.stream_dataset(ids, batch_size, seq_length, num_batches, offset, start_batch)
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_ten_characters_give_known_windows():
    ids = np.arange(10, dtype=np.int32)  # "abcdefghij" encoded
    batches = _batches(ids, batch_size=2, seq_length=2)
    # (10 - 1) // (2 * 2) = 2 batches; streams of 4: ids 0-3 and 4-7; the last target is id 8.
    assert [x.tolist() for x, _ in batches] == [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]
    assert [y.tolist() for _, y in batches] == [[[1, 2], [5, 6]], [[3, 4], [7, 8]]]


def test_targets_are_inputs_shifted_and_never_wrap():
    ids = np.random.default_rng(0).integers(0, 50, 997).astype(np.int32)
    for x, y in _batches(ids, batch_size=3, seq_length=7):
        assert np.array_equal(x[:, 1:], y[:, :-1])
    ((_, only_targets),) = _batches(ids, batch_size=1, seq_length=996)
    assert np.array_equal(only_targets[0], ids[1:997])  # ends on the corpus's last id, not ids[0]


def test_streams_continue_across_batches_and_use_every_char_once():
    ids = np.arange(1000, dtype=np.int32)
    batch_size, seq_length = 4, 9
    batches = _batches(ids, batch_size, seq_length)
    streams = np.concatenate([x for x, _ in batches], axis=1)
    for row in streams:  # each row is one contiguous run of the corpus
        assert np.array_equal(np.diff(row), np.ones(len(row) - 1))
    used = np.sort(streams.reshape(-1))
    num_batches = (1000 - 1) // (batch_size * seq_length)
    assert np.array_equal(used, np.arange(num_batches * batch_size * seq_length))


def test_offset_and_start_batch():
    ids = np.arange(100, dtype=np.int32)
    batches = _batches(ids, 2, 5, offset=3)
    # (100 - 1 - 3) // 10 = 9 batches; streams of 45 start at 3 and 48.
    assert batches[0][0].tolist() == [[3, 4, 5, 6, 7], [48, 49, 50, 51, 52]]
    resumed = _batches(ids, 2, 5, offset=3, start_batch=2)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches[2:], resumed, strict=True))
    assert len(resumed) == len(batches) - 2


def test_random_offset_keeps_the_batch_count_and_is_seeded():
    offsets = {int(pipeline.epoch_offset(7, epoch, 10, True)) for epoch in range(30)}
    assert len(offsets) > 1 and all(0 <= o < 10 for o in offsets)
    assert int(pipeline.epoch_offset(7, 3, 10, True)) == int(pipeline.epoch_offset(7, 3, 10, True))
    assert int(pipeline.epoch_offset(7, 3, 10, False)) == 0
    num_batches = splits.num_stream_batches(1000, 4, 10, random_offset=True)
    for offset in range(10):
        pipeline.stream_dataset(np.arange(1000), 4, 10, num_batches, offset)  # fits for every offset


def test_training_dataset_runs_epoch_after_epoch_and_resumes():
    ids = np.arange(200, dtype=np.int32)
    num_batches = splits.num_stream_batches(200, 2, 10, random_offset=True)  # (200 - 1 - 9) // 20 = 9
    elements = list(pipeline.training_dataset(ids, 2, 10, num_batches, seed=3, random_offset=True).take(20))
    positions = [(int(e), int(k)) for e, k, _, _ in elements]
    assert positions == [(0, k) for k in range(9)] + [(1, k) for k in range(9)] + [(2, 0), (2, 1)]
    for epoch, k, x, y in elements:
        offset = int(pipeline.epoch_offset(3, epoch, 10, True))
        start = offset + k.numpy() * 10
        assert x.numpy()[0].tolist() == list(range(start, start + 10))
        assert x.numpy()[1, 0] == offset + 90 + k.numpy() * 10  # stream 1 starts S = 90 ids later
        assert np.array_equal(y.numpy(), x.numpy() + 1)
    resumed = list(
        pipeline.training_dataset(ids, 2, 10, num_batches, 3, True, start_epoch=1, start_batch=7).take(3)
    )
    assert [(int(e), int(k)) for e, k, _, _ in resumed] == [(1, 7), (1, 8), (2, 0)]
    assert np.array_equal(resumed[0][2], elements[16][2])


def test_split_is_contiguous():
    train, val = splits.split_ids(np.arange(100), 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))


def test_unicode_corpus_round_trips(text_file, corpus_cache):
    text = "한국어 텍스트와 이모지 😀🎉 그리고 English.\n" * 3
    path = text_file(text)
    corpus = encoded.load_corpus(DataConfig(data_path=path, cache_dir=corpus_cache))
    assert corpus.vocab.decode(corpus.ids) == text
    assert len(corpus.ids) == len(text)
    data_bytes = text.encode("utf-8")
    assert (corpus.sha256, corpus.size) == (hashlib.sha256(data_bytes).hexdigest(), len(data_bytes))


def test_cached_ids_are_memory_mapped_and_read_only(text_file, corpus_cache):
    corpus = encoded.load_corpus(DataConfig(data_path=text_file("abcabc"), cache_dir=corpus_cache))
    assert isinstance(corpus.ids, np.memmap) and corpus.ids.dtype == np.uint8
    assert not corpus.ids.flags.writeable


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 64])
def test_text_streams_in_chunks_without_splitting_characters(tmp_path, chunk_bytes):
    text = "aé한😀\n" * 7 + "z"
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    pieces = list(sources.read_text_chunks(str(path), chunk_bytes=chunk_bytes))
    assert "".join(pieces) == text
    assert all(len(piece.encode("utf-8")) <= chunk_bytes + 3 for piece in pieces)  # + a carried character


@pytest.mark.parametrize("chunk_bytes", [1, 3, 7, 1 << 20])
def test_streamed_utf8_error_names_the_file_offset_and_line(tmp_path, chunk_bytes):
    path = tmp_path / "corpus.txt"
    path.write_bytes("é\n한\n".encode("utf-8") * 3 + b"ok\xff" + "😀".encode("utf-8")[:2])
    with pytest.raises(UserError, match=r"not valid UTF-8 at byte 23 \(line 7: invalid start byte\)"):
        list(sources.read_text_chunks(str(path), chunk_bytes=chunk_bytes))
    path.write_bytes(b"ok" + "😀".encode("utf-8")[:2])  # ends inside a character
    with pytest.raises(UserError, match="not valid UTF-8 at byte 2 .line 1: unexpected end of data"):
        list(sources.read_text_chunks(str(path), chunk_bytes=chunk_bytes))


def test_id_cache_is_keyed_by_content(text_file, corpus_cache):
    path = text_file("abcabc")
    config = DataConfig(data_path=path, cache_dir=corpus_cache)
    corpus = encoded.load_corpus(config)
    folder = os.path.join(corpus_cache, "encoded")
    entry = [corpus.sha256 + suffix for suffix in (".ids.npy", ".vocab.json")]
    assert sorted(os.listdir(folder)) == sorted(entry + [name + ".record.json" for name in entry])
    cached = encoded.load_corpus(config)  # served from the cache
    assert cached.vocab.decode(cached.ids) == "abcabc"
    with open(path, "w", encoding="utf-8") as f:  # the same path, new content: never the stale ids
        f.write("xyzzy")
    corpus = encoded.load_corpus(config)
    assert corpus.vocab.decode(corpus.ids) == "xyzzy"
    assert len(os.listdir(folder)) == 8


def test_shakespeare_split_matches_nanogpt(shakespeare_cache):
    corpus = encoded.load_corpus(DataConfig(cache_dir=shakespeare_cache))
    train, val = splits.split_ids(corpus.ids, 0.1)
    assert (len(train), len(val)) == (1003854, 111540)


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()


def test_download_is_checked_and_cached(monkeypatch, corpus_cache):
    payload = b"not the corpus"
    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda url, timeout: _Response(payload))
    with pytest.raises(UserError, match="does not match sha256"):
        sources.download_shakespeare(corpus_cache)
    assert not os.path.exists(os.path.join(corpus_cache, sources.SHAKESPEARE_CACHE_PATH))
    monkeypatch.setattr(sources, "SHAKESPEARE_SHA256", sources.files.sha256_hex(payload))
    path = sources.download_shakespeare(corpus_cache)
    assert open(path, "rb").read() == payload


def test_a_failed_download_says_where_to_put_the_corpus_by_hand(monkeypatch, tmp_path):
    def unreachable(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(sources.urllib.request, "urlopen", unreachable)
    with pytest.raises(UserError) as refused:
        sources.download_shakespeare(str(tmp_path))
    path = os.path.join(str(tmp_path), sources.SHAKESPEARE_CACHE_PATH)
    assert f"save it by hand as {path}, or pass --data_path=FILE" in str(refused.value)
    assert not os.path.exists(path)


def test_a_damaged_download_is_downloaded_again_with_one_warning(monkeypatch, corpus_cache, caplog):
    payload = b"the corpus"
    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda url, timeout: _Response(payload))
    monkeypatch.setattr(sources, "SHAKESPEARE_SHA256", sources.files.sha256_hex(payload))
    path = os.path.join(corpus_cache, sources.SHAKESPEARE_CACHE_PATH)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"the cor")  # a download cut short
    with caplog.at_level(logging.WARNING, logger="absl"):
        assert sources.download_shakespeare(corpus_cache) == path
    assert open(path, "rb").read() == payload
    (warning,) = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warning.startswith(f"The downloaded corpus {path} is not the tiny-shakespeare corpus (7 bytes, ")
    with open(path, "wb") as f:
        f.write(b"the cor")
    monkeypatch.setattr(sources.cache, "writable", lambda folder: False)  # a read-only cache
    with pytest.raises(UserError, match=f"{path} is not the tiny-shakespeare corpus .* delete it"):
        sources.download_shakespeare(corpus_cache)


def test_offline_download_names_the_url_and_data_path(monkeypatch, corpus_cache):
    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(sources.urllib.request, "urlopen", offline)
    with pytest.raises(UserError) as error:
        sources.download_shakespeare(corpus_cache)
    assert sources.SHAKESPEARE_URL in str(error.value) and "--data_path" in str(error.value)
    assert "\n" not in str(error.value)


def test_too_short_split_says_which_flags():
    with pytest.raises(UserError, match="lower --batch_size or --seq_length"):
        splits.check_split_size("validation", 50, batch_size=4, seq_length=16)
    splits.check_split_size("training", 65, batch_size=4, seq_length=16)
