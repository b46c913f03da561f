"""The character vocabulary: Unicode code points of a corpus, ids in sorted order, JSON on disk."""

import json
from collections.abc import Iterable
from typing import Self

import numpy as np
import numpy.typing as npt

from tf_charrnn import files


class Vocab:
    """Maps characters (Unicode code points) to int32 ids and back."""

    def __init__(self, chars: Iterable[str]) -> None:
        chars = list(chars)
        if not chars:
            raise ValueError("the vocabulary is empty: the corpus has no characters")
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("a vocabulary must list distinct single characters")
        self.chars = chars
        self._code_points = np.array([ord(c) for c in chars], dtype=np.int64)
        self._order = np.argsort(self._code_points)
        self._sorted_code_points = self._code_points[self._order]

    @classmethod
    def from_text(cls, text: str) -> Self:
        """The characters of `text`, sorted by code point."""
        return cls(sorted(set(text)))

    def extended(self, chars: Iterable[str]) -> "Vocab":
        """This vocabulary, its ids kept, with the characters of `chars` it lacks appended in sorted order
        (a fine-tuned run's vocabulary: its source's, then the new text's new characters)."""
        known = set(self.chars)
        return Vocab(self.chars + sorted(set(chars) - known))

    @property
    def id_dtype(self) -> np.dtype:
        """The smallest numpy integer type that holds every id (uint8 up to 256 characters)."""
        for dtype in (np.uint8, np.uint16):
            if len(self.chars) <= np.iinfo(dtype).max + 1:
                return np.dtype(dtype)
        return np.dtype(np.int32)

    @property
    def space_id(self) -> int:
        """The id of " ", -1 when the vocabulary has none (sample_at_space draws only after it)."""
        return self.chars.index(" ") if " " in self.chars else -1

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def unknown_chars(self, text: Iterable[str]) -> list[str]:
        """Characters of `text` outside the vocabulary, in first-seen order."""
        known = set(self.chars)
        return list(dict.fromkeys(c for c in text if c not in known))

    def encode(self, text: str, dtype: npt.DTypeLike = np.int32, chunk_size: int = 1 << 22) -> np.ndarray:
        """Encodes a string, `chunk_size` characters at a time so that a large corpus needs little
        memory beyond its ids.

        Args:
          text: the string.
          dtype: numpy integer type of the ids (`id_dtype` is the most compact).

        Returns:
          [len(text)] ids of type `dtype`.
        Raises:
          ValueError: `text` holds characters outside the vocabulary (named in the message).
        """
        ids = np.empty(len(text), dtype=dtype)
        for start in range(0, len(text), chunk_size):
            piece = text[start : start + chunk_size]
            code_points = np.frombuffer(piece.encode("utf-32-le"), dtype=np.uint32)
            positions = np.searchsorted(self._sorted_code_points, code_points)
            positions = np.minimum(positions, len(self.chars) - 1)
            if not np.array_equal(self._sorted_code_points[positions], code_points):
                raise ValueError(f"characters not in the vocabulary: {self.unknown_chars(text)!r}")
            ids[start : start + len(piece)] = self._order[positions]
        return ids

    def decode(self, ids: npt.ArrayLike) -> str:
        """Decodes a sequence of ids to a string."""
        return "".join(self.chars[i] for i in np.asarray(ids).reshape(-1))

    def to_json(self) -> str:
        return json.dumps({"chars": self.chars}, ensure_ascii=False, indent=0)

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls(json.loads(text)["chars"])

    def save(self, path: str) -> None:
        files.write_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str) -> Self:
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())
