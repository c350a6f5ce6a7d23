"""Tokenize a corpus once: progress bar, throughput, and an on-disk cache.

Morphological analysis of 200k Korean reviews takes minutes; the second run of
the same data with the same tokenizer settings should not pay it again. The
cache key is the sha256 of the tokenizer's fingerprint (its settings and
library version) and of the texts themselves, so editing one review or one
option gives a new entry. Entries live in ``<cache>/tokens/`` as gzipped JSON after a line with its
sha256: a truncated or altered entry is tokenized again, and a cache that cannot be written is skipped.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

CHUNK = 2000


def cache_key(tokenizer, texts: Sequence[str]) -> str:
    h = hashlib.sha256(tokenizer.fingerprint.encode())
    for t in texts:
        h.update(b"\0")
        h.update(t.encode("utf-8"))
    return h.hexdigest()[:32]


def tokenize_corpus(tokenizer, texts: Sequence[str], *, cache: bool = True, progress: bool = True,
                    desc: str = "tokenize", log: Optional[Callable[[str], None]] = None,
                    cache_root: Optional[Path] = None) -> list[list[str]]:
    """``tokenizer.batch`` over ``texts`` in chunks, cached on disk when ``cache``."""
    from .data import cache_dir
    from .run import atomic_write_bytes

    log = log or (lambda m: print(m, file=sys.stderr))
    inner = getattr(tokenizer, "inner", None)
    if inner is not None:
        # append_chars: the inner tokenizer's entry serves runs with and without it; the characters are cheap to add.
        words = tokenize_corpus(inner, texts, cache=cache, progress=progress, desc=desc, log=log, cache_root=cache_root)
        return tokenizer.append(words, texts)
    path = None
    if cache:
        path = (cache_root or cache_dir()) / "tokens" / f"{cache_key(tokenizer, texts)}.json.gz"
        if path.exists():
            tokens = _read_entry(path)
            if tokens is not None and len(tokens) == len(texts):
                log(f"tokens: {desc}: {len(texts):,} documents from cache")
                return tokens
            log(f"tokens: {desc}: the cache entry {path.name} is damaged (or from an older rnnkit); "
                "tokenizing again")
    from tqdm.auto import tqdm

    started = time.perf_counter()
    tokens: list[list[str]] = []
    with tqdm(total=len(texts), desc=desc, unit="doc", disable=None if progress else True, leave=False,
              file=sys.stderr) as bar:
        for i in range(0, len(texts), CHUNK):
            chunk = texts[i:i + CHUNK]
            tokens.extend(tokenizer.batch(chunk))
            bar.update(len(chunk))
    seconds = time.perf_counter() - started
    n_tokens = sum(len(t) for t in tokens)
    log(f"tokens: {desc}: {len(texts):,} documents, {n_tokens:,} tokens in {seconds:.1f} s "
        f"({len(texts) / max(seconds, 1e-9):,.0f} docs/s)")
    if path is not None:
        payload = json.dumps(tokens, ensure_ascii=False).encode("utf-8")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, gzip.compress(_HEADER + hashlib.sha256(payload).hexdigest().encode() + b"\n"
                                                   + payload, 3))
        except OSError as exc:  # the cache only saves time: a read-only or full one must not stop a run
            log(f"tokens: could not write the token cache in {path.parent} ({exc.strerror}); "
                "going on without it (--set cache_tokens=false skips it)")
    return tokens


_HEADER = b"rnnkit-tokens sha256="


def _read_entry(path: Path) -> Optional[list]:
    """The tokens of a cache entry, or None when it is unreadable, truncated or altered: the entry
    carries the sha256 of its own JSON, so nothing but what was written comes back."""
    try:
        head, _, payload = gzip.decompress(path.read_bytes()).partition(b"\n")
        if head != _HEADER + hashlib.sha256(payload).hexdigest().encode():
            return None
        tokens = json.loads(payload)
    except Exception:  # gzip, zlib, EOF and JSON errors alike: rebuild the entry
        return None
    return tokens if isinstance(tokens, list) else None
