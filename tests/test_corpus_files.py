"""--data_path as a folder, a glob or a list: which files, in which order, joined how; what is skipped; a
changed file refused on resume by name."""

import json
import logging
import os

import pytest

from helpers import QUOTE, make_config
from tf_charrnn.config import DataConfig
from tf_charrnn.data import corpus_files, encoded
from tf_charrnn.errors import UserError
from tf_charrnn.training import trainer

TEXTS = {"b.txt": "Bee text.\n", "a.txt": "Ay text\n", os.path.join("sub", "c.md"): "Sea? ü 😀"}


@pytest.fixture
def folder(tmp_path):
    """A folder of three text files (written in reverse name order), a hidden file and an empty one."""
    root = tmp_path / "texts"
    for name, text in reversed(TEXTS.items()):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / ".hidden.txt").write_text("not read", encoding="utf-8")
    (root / "sub" / "empty.txt").write_text("", encoding="utf-8")
    return root


def _text(data_path, cache, separator="\n\n"):
    corpus = encoded.load_corpus(
        DataConfig(data_path=str(data_path), cache_dir=cache, document_separator=separator)
    )
    return corpus.vocab.decode(corpus.ids)


def test_folder_glob_and_list_give_the_ids_of_the_joined_text(folder, corpus_cache):
    a, b, c = TEXTS["a.txt"], TEXTS["b.txt"], TEXTS[os.path.join("sub", "c.md")]
    assert _text(folder, corpus_cache) == "\n\n".join([a, b, c])  # sorted paths, hidden and empty left out
    assert _text(folder / "**", corpus_cache) == "\n\n".join([a, b, c])
    assert _text(folder / "*.txt", corpus_cache, separator="") == a + b
    assert _text(f"{folder}/sub/c.md, {folder}/a.txt", corpus_cache, separator="<|>") == c + "<|>" + a
    assert _text(folder / "a.txt", corpus_cache) == a  # one file: no separator
    listing = corpus_files.list_corpus(str(folder))
    assert [file.name for file in listing.files] == ["a.txt", "b.txt", os.path.join("sub", "c.md")]
    assert listing.size == len("\n\n".join([a, b, c]).encode("utf-8"))


def test_order_is_the_sorted_path_order_whatever_the_filesystem_lists(folder, monkeypatch):
    expected = [file.name for file in corpus_files.list_corpus(str(folder)).files]
    walk = os.walk
    monkeypatch.setattr(
        corpus_files.os,
        "walk",
        lambda top: [(path, folders[::-1], names[::-1]) for path, folders, names in walk(top)][::-1],
    )
    assert [file.name for file in corpus_files.list_corpus(str(folder)).files] == expected


def test_binary_and_non_utf8_files_are_skipped_with_one_warning(folder, corpus_cache, caplog):
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (folder / "latin1.txt").write_bytes("crème".encode("latin-1"))
    with caplog.at_level(logging.WARNING):
        text = _text(folder, corpus_cache)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 2 file(s) that are binary or not UTF-8" in warnings[0]
    assert "image.png" in warnings[0] and "latin1.txt" in warnings[0]
    assert "crème" not in text and "PNG" not in text
    # Named on its own, the same file is an error with its byte offset.
    with pytest.raises(UserError, match=r"latin1.txt is not valid UTF-8 at byte 2 \(line 1"):
        corpus_files.list_corpus(str(folder / "latin1.txt"))


def test_no_text_a_glob_matching_nothing_and_a_missing_part_are_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=r"holds no UTF-8 text; pass a folder"):
        corpus_files.list_corpus(str(empty))
    (empty / "data.bin").write_bytes(b"\x00\x01")
    with pytest.raises(
        UserError, match=r"holds no UTF-8 text \(1 skipped as binary or not UTF-8: .*data.bin\)"
    ):
        corpus_files.list_corpus(str(empty))
    with pytest.raises(UserError, match=r"matches no files; check the pattern"):
        corpus_files.list_corpus(str(tmp_path / "*.txt"))
    (tmp_path / "a.txt").write_text("a", encoding="utf-8")
    with pytest.raises(UserError, match=r"missing.txt does not exist"):
        corpus_files.list_corpus(f"{tmp_path}/a.txt,{tmp_path}/missing.txt")


def test_identity_covers_each_file_and_the_separator(folder):
    listing = corpus_files.list_corpus(str(folder))
    assert listing.sha256 == corpus_files.list_corpus(str(folder)).sha256
    assert listing.sha256 != corpus_files.list_corpus(str(folder), separator="\n").sha256
    (folder / "b.txt").write_text("Bee text!\n", encoding="utf-8")
    edited = corpus_files.list_corpus(str(folder))
    assert edited.sha256 != listing.sha256
    assert corpus_files.describe_changes(listing.manifest(), edited.manifest()) == "edited: b.txt"
    single = corpus_files.list_corpus(str(folder / "a.txt"))
    assert single.sha256 == __import__("hashlib").sha256(TEXTS["a.txt"].encode()).hexdigest()


def test_an_edited_added_or_removed_file_is_refused_on_resume_by_name(folder, corpus_cache, tmp_path):
    for index in range(8):  # enough text for a few batches
        (folder / f"quote{index}.txt").write_text(QUOTE + " Ay? Bee. Sea ü 😀\n", encoding="utf-8")
    config = make_config(
        folder,
        corpus_cache,
        tmp_path / "run",
        batch_size=2,
        seq_length=8,
        rnn_units=8,
        num_layers=1,
        embedding_dim=4,
        max_steps=2,
        eval_every=2,
        sample_length=0,
    )
    trainer.train(config)
    with open(tmp_path / "run" / "config.json") as f:
        recorded = json.load(f)["data"]["corpus_files"]
    assert [line.split("  ")[1] for line in recorded][:3] == ["a.txt", "b.txt", "quote0.txt"]
    original = (folder / "b.txt").read_bytes()
    changes = [
        (lambda: (folder / "b.txt").write_text("Bee text?\n", encoding="utf-8"), "edited: b.txt"),
        (lambda: (folder / "b.txt").write_bytes(original), None),
        (lambda: (folder / "d.txt").write_text("Bee. Sea\n", encoding="utf-8"), "added: d.txt"),
        (lambda: (folder / "d.txt").unlink(), None),
        (lambda: (folder / "a.txt").unlink(), "removed: a.txt"),
    ]
    for change, named in changes:
        change()
        if named:
            with pytest.raises(
                UserError, match=rf"the corpus has changed since .*; {named}\); resume with the"
            ):
                trainer.train(config.replace(max_steps=4))
    (folder / "a.txt").write_text(TEXTS["a.txt"], encoding="utf-8")
    assert trainer.train(config.replace(max_steps=3)).step == 3  # the same files again: resumes
