"""Text -> tokens, behind one small interface.

A tokenizer is a callable ``str -> list[str]`` with a JSON-able ``settings``
dict; the settings are saved in the run folder so prediction tokenizes exactly
as training did. Add a tokenizer by subclassing :class:`Tokenizer` and listing
it in ``TOKENIZERS``.
"""

from __future__ import annotations

import unicodedata
from typing import ClassVar

from .errors import RnnkitError


class Tokenizer:
    name: ClassVar[str] = ""

    def __init__(self, lowercase: bool = False, normalize: str = "NFC"):
        self.lowercase = lowercase
        self.normalize = normalize

    def prepare(self, text: str) -> str:
        # NFC first: "é" typed as e + combining accent must hit the same ids as "é".
        text = unicodedata.normalize(self.normalize, text) if self.normalize else text
        return text.lower() if self.lowercase else text

    def __call__(self, text: str) -> list[str]:
        raise NotImplementedError

    def batch(self, texts) -> list[list[str]]:
        return [self(t) for t in texts]

    @property
    def settings(self) -> dict:
        return {"name": self.name, "lowercase": self.lowercase, "normalize": self.normalize}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings.items() if k != "name")
        return f"{type(self).__name__}({args})"


class CharTokenizer(Tokenizer):
    """One token per Unicode character (spaces included), e.g. for surnames."""

    name = "char"

    def __call__(self, text: str) -> list[str]:
        return list(self.prepare(text))


class WhitespaceTokenizer(Tokenizer):
    """Tokens are the runs of non-space characters."""

    name = "whitespace"

    def __call__(self, text: str) -> list[str]:
        return self.prepare(text).split()


TOKENIZERS: dict[str, type[Tokenizer]] = {cls.name: cls for cls in (CharTokenizer, WhitespaceTokenizer)}


def make_tokenizer(settings: dict | str) -> Tokenizer:
    """Build a tokenizer from its name or its saved ``settings`` dict."""
    if isinstance(settings, str):
        settings = {"name": settings}
    settings = dict(settings)
    name = settings.pop("name", None)
    if name not in TOKENIZERS:
        raise RnnkitError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")
    return TOKENIZERS[name](**settings)
