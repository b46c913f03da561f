import numpy as np
import pytest

from tf_charrnn.data.vocab import Vocab


def test_sorted_by_code_point_and_round_trip():
    vocab = Vocab.from_text("hello world")
    assert vocab.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]
    ids = vocab.encode("hello")
    assert ids.dtype == np.int32
    assert ids.tolist() == [3, 2, 4, 4, 5]
    assert vocab.decode(ids) == "hello"


def test_unicode_code_points_not_bytes():
    text = "안녕하세요 😀 세계!"
    vocab = Vocab.from_text(text)
    assert len(vocab) == len(set(text))
    assert "😀" in vocab.chars
    assert vocab.decode(vocab.encode(text)) == text


def test_unknown_characters_are_named():
    vocab = Vocab.from_text("abc")
    with pytest.raises(ValueError, match=r"\['x', 'é'\]"):
        vocab.encode("abxcéx")
    assert vocab.unknown_chars("zz a") == ["z", " "]


def test_json_round_trip(tmp_path):
    vocab = Vocab.from_text("ab\n\t가😀")
    path = tmp_path / "vocab.json"
    vocab.save(str(path))
    assert Vocab.load(str(path)) == vocab
    assert "가" in path.read_text(encoding="utf-8")


def test_rejects_empty_or_duplicate():
    with pytest.raises(ValueError):
        Vocab([])
    with pytest.raises(ValueError):
        Vocab(["a", "a"])


def test_corpus_ids_use_the_smallest_type_and_chunks_do_not_change_them():
    text = "the quick brown fox\n" * 50
    vocab = Vocab.from_text(text)
    assert vocab.id_dtype == np.uint8
    compact = vocab.encode(text, dtype=vocab.id_dtype, chunk_size=7)
    assert compact.dtype == np.uint8
    np.testing.assert_array_equal(compact, vocab.encode(text))
    assert Vocab([chr(0x4E00 + i) for i in range(300)]).id_dtype == np.uint16
    assert Vocab([chr(0x4E00 + i) for i in range(70000)]).id_dtype == np.int32


def test_an_unknown_character_in_a_later_chunk_is_named():
    vocab = Vocab.from_text("abc")
    with pytest.raises(ValueError, match=r"\['x'\]"):
        vocab.encode("abcabcabcx", chunk_size=3)
