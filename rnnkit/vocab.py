"""Token <-> index maps, fitted on the training split only and saved as JSON.

Two kinds, as in the book's ch. 6: a plain :class:`Vocabulary` for labels
(no reserved entries) and a :class:`Vocabulary` with ``specials`` for tokens,
where ``<pad>`` is always 0 (so ``nn.Embedding(padding_idx=0)`` and zero padding
agree) and ``<unk>`` is always 1.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Iterable, Optional, Sequence

from .errors import RnnkitError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)


class Vocabulary:
    """An ordered token list and its inverse.

    >>> v = Vocabulary.build([["a", "b"], ["a"]], specials=SPECIALS)
    >>> v.index("a"), v.index("zzz"), v.token(0)
    (4, 1, '<pad>')
    """

    def __init__(self, tokens: Sequence[str] = (), specials: Sequence[str] = ()):
        self.specials = tuple(specials)
        self.tokens: list[str] = []
        self._index: dict[str, int] = {}
        for tok in (*self.specials, *tokens):
            self.add(tok)
        self.unk_index: Optional[int] = self._index.get(UNK)

    # Reserved ids are fixed by position, and code elsewhere relies on them.
    pad_index = 0

    @property
    def bos_index(self) -> Optional[int]:
        return self._index.get(BOS)

    @property
    def eos_index(self) -> Optional[int]:
        return self._index.get(EOS)

    @classmethod
    def build(
        cls,
        sequences: Iterable[Iterable[str]],
        specials: Sequence[str] = SPECIALS,
        min_freq: int = 1,
        max_size: Optional[int] = None,
    ) -> "Vocabulary":
        """Count tokens and keep those seen ``min_freq`` times, most frequent first.

        ``max_size`` caps the total size, specials included. Ties are broken by
        first appearance so the result is deterministic.
        """
        counts: Counter = Counter()
        for seq in sequences:
            counts.update(seq)
        kept = [t for t, c in counts.most_common() if c >= min_freq and t not in specials]
        if max_size is not None:
            kept = kept[: max(0, max_size - len(specials))]
        vocab = cls(kept, specials)
        vocab.counts = {t: counts[t] for t in kept}
        return vocab

    def add(self, token: str) -> int:
        if token not in self._index:
            self._index[token] = len(self.tokens)
            self.tokens.append(token)
        return self._index[token]

    def index(self, token: str) -> int:
        """The id of ``token``; ``<unk>``'s id when unknown (KeyError if there is no ``<unk>``)."""
        idx = self._index.get(token)
        if idx is not None:
            return idx
        if self.unk_index is None:
            raise KeyError(token)
        return self.unk_index

    def encode(self, tokens: Iterable[str]) -> list[int]:
        get, unk = self._index.get, self.unk_index
        return [get(t, unk) for t in tokens]

    def token(self, index: int) -> str:
        return self.tokens[index]

    def __contains__(self, token: str) -> bool:
        return token in self._index

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens and self.specials == other.specials

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, specials={list(self.specials)})"

    def to_dict(self) -> dict:
        return {"specials": list(self.specials), "tokens": self.tokens[len(self.specials):]}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocabulary":
        try:
            return cls(data["tokens"], data.get("specials", ()))
        except (KeyError, TypeError) as exc:
            raise RnnkitError(f"malformed vocabulary JSON (missing {exc}); re-train to recreate it") from exc

    def save(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False)

    @classmethod
    def load(cls, path) -> "Vocabulary":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))
