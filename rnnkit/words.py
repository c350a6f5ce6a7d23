"""The built-in offline ``words`` dataset: classify a single word by language.

The data is built at run time from the frequency word lists that the
`wordfreq <https://github.com/rspeer/wordfreq>`_ package ships inside its
wheel, so nothing is downloaded and nothing is cached on disk. Building the
default dataset (10 languages x 3000 words) takes a fraction of a second.

How the data is made
--------------------
1. **Candidates.** For every language, words are read in descending frequency
   order from wordfreq's ``"small"`` list (``wordfreq.iter_wordlist``, the same
   order ``wordfreq.top_n_list`` uses). The small lists hold every word with a
   frequency of at least ~1e-6, far more than needed; if a language still
   cannot be filled (very large ``per_language``) every language is rebuilt
   from the ``"best"`` (large) lists.
2. **Token filter.** A word is kept only if, after lowercasing and NFC
   normalisation, it has at least two characters and *every* character is a
   Latin-script letter (``str.isalpha()`` and the Unicode name starts with
   ``LATIN``; accented letters such as ``é``, ``ß``, ``ł``, ``ğ`` are kept).
   Tokens with digits, punctuation, symbols (``º``), other scripts, and
   **apostrophes** are dropped: apostrophe tokens are mostly English
   contractions (``don't``) and Turkish suffixed proper nouns
   (``türkiye'de``) which would make the task trivially easy through the
   apostrophe alone; a few real words such as French ``aujourd'hui`` are lost.
3. **Ambiguous (shared) words.** A word can appear in the lists of several
   languages (``de``, ``in``, ``hotel``, English words used in Polish...).
   For each word we look up its frequency in *every* selected language (the
   whole wordfreq list, not only the candidates) and apply this rule:

   * the word belongs to the language where it is most frequent (the
     *owner*), and only to it: it is removed from every other language;
   * the owner keeps it only if its frequency is at least
     ``ambiguity_ratio`` (default 2.0) times the runner-up's frequency;
     otherwise the word is too ambiguous and is dropped from all languages.

   Hence no word ever appears with two labels (and no word appears twice).
4. **Selection.** The first ``per_language`` surviving words of each language
   in frequency order are kept (candidates are read until the quota is
   filled).
5. **Split.** Per language (stratified), the words are shuffled with
   ``random.Random(seed)``; the first ``round(n * test_fraction)`` go to
   ``"test"``, the next ``round(n * val_fraction)`` to ``"val"`` and the rest
   to ``"train"`` (a non-zero fraction always gets at least one word). The
   combined rows are finally shuffled with the same generator so the
   languages are interleaved. Same arguments -> identical output.

Note that wordfreq's lists contain some proper nouns (``lucas``, ``renault``)
and loanwords; those are kept as long as they pass the rules above.
The wordfreq data is licensed CC-BY-SA 4.0 (see the wordfreq project).
"""

from __future__ import annotations

import random
import unicodedata
from typing import Iterable, Sequence

__all__ = [
    "DEFAULT_LANGUAGES",
    "LANGUAGE_NAMES",
    "WORDS_INFO",
    "build_words_dataset",
    "is_valid_word",
    "words_dataset_stats",
]

#: Language codes of the default dataset (all Latin script).
DEFAULT_LANGUAGES: tuple[str, ...] = (
    "en", "de", "fr", "es", "it", "pt", "nl", "pl", "cs", "tr",
)

#: English names used as labels, for the Latin-script languages wordfreq ships.
LANGUAGE_NAMES: dict[str, str] = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "pl": "Polish",
    "cs": "Czech",
    "tr": "Turkish",
    "ca": "Catalan",
    "da": "Danish",
    "fi": "Finnish",
    "fil": "Filipino",
    "hu": "Hungarian",
    "id": "Indonesian",
    "is": "Icelandic",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "ms": "Malay",
    "nb": "Norwegian",
    "ro": "Romanian",
    "sh": "Serbo-Croatian",
    "sk": "Slovak",
    "sl": "Slovenian",
    "sv": "Swedish",
    "vi": "Vietnamese",
}

DEFAULT_PER_LANGUAGE = 3000
DEFAULT_AMBIGUITY_RATIO = 2.0

WORDS_INFO: dict = {
    "name": "words",
    "task": "word -> language (single-word language identification)",
    "source": (
        "wordfreq package word-frequency lists (bundled with the package, no "
        "download; data CC-BY-SA 4.0)"
    ),
    "languages": {code: LANGUAGE_NAMES[code] for code in DEFAULT_LANGUAGES},
    "per_language": DEFAULT_PER_LANGUAGE,
    "size": DEFAULT_PER_LANGUAGE * len(DEFAULT_LANGUAGES),
    "splits": {"train": 0.8, "val": 0.1, "test": 0.1},
    "filter": (
        "lowercased, NFC; >= 2 characters; Latin-script letters only (accents "
        "kept; digits, punctuation, apostrophes, other scripts dropped)"
    ),
    "dedup_rule": (
        "a word found in several languages' lists goes only to the language "
        "where it is most frequent, and only if that frequency is >= 2x the "
        "runner-up's; otherwise it is dropped everywhere"
    ),
    "selection": "the most frequent surviving words of each language",
    "split_rule": "stratified per language, shuffled with random.Random(seed)",
}


def is_valid_word(word: str) -> bool:
    """True if ``word`` has >= 2 characters, all of them Latin-script letters."""
    if len(word) < 2:
        return False
    for ch in word:
        if not ch.isalpha():
            return False
        if not unicodedata.name(ch, "").startswith("LATIN"):
            return False
    return True


def _normalise(word: str) -> str:
    return unicodedata.normalize("NFC", word.lower())


def _check_args(languages, per_language, val_fraction, test_fraction, ratio):
    langs = list(languages)
    if not langs:
        raise ValueError("languages must not be empty")
    if len(set(langs)) != len(langs):
        raise ValueError(f"duplicate language codes in {langs!r}")
    if isinstance(per_language, bool) or not isinstance(per_language, int) or per_language < 1:
        raise ValueError(f"per_language must be a positive int, got {per_language!r}")
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= float(frac) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {frac!r}")
    if float(val_fraction) + float(test_fraction) >= 1.0:
        raise ValueError(
            "val_fraction + test_fraction must be < 1 so that train is not empty, "
            f"got {val_fraction} + {test_fraction}"
        )
    if not float(ratio) >= 1.0:
        raise ValueError(f"ambiguity_ratio must be >= 1, got {ratio!r}")
    return langs


def _select_words(
    languages: Sequence[str],
    per_language: int,
    ambiguity_ratio: float,
    wordlist: str,
) -> tuple[dict[str, list[str]], dict[str, dict[str, int]]]:
    """Return ``({code: [words in frequency order]}, stats)`` for one wordlist.

    ``stats[code]`` counts, among the candidates read before the quota was
    filled: ``"filtered"`` (failed the token filter), ``"other_language"``
    (shared word owned by another language) and ``"ambiguous"`` (shared word
    whose owner is not 2x ahead of the runner-up).
    """
    import wordfreq  # local import: keeps `import rnnkit.words` cheap

    available = set(wordfreq.available_languages(wordlist))
    missing = [code for code in languages if code not in available]
    if missing:
        raise ValueError(
            f"language(s) {missing} not available in wordfreq's {wordlist!r} "
            f"lists; available: {sorted(available)}"
        )
    freqs = [wordfreq.get_frequency_dict(code, wordlist) for code in languages]

    selected: dict[str, list[str]] = {}
    stats: dict[str, dict[str, int]] = {}
    for li, code in enumerate(languages):
        kept: list[str] = []
        seen: set[str] = set()
        st = {"filtered": 0, "other_language": 0, "ambiguous": 0}
        for raw in wordfreq.iter_wordlist(code, wordlist):
            if len(kept) >= per_language:
                break
            word = _normalise(raw)
            if word in seen:
                continue
            if not is_valid_word(word):
                st["filtered"] += 1
                continue
            seen.add(word)
            # frequency of the word in each selected language (0 = absent)
            f = [d.get(word, 0.0) for d in freqs]
            f[li] = max(f[li], freqs[li].get(raw, 0.0))
            best = max(range(len(f)), key=lambda i: (f[i], -i))
            if best != li:
                st["other_language"] += 1
                continue
            runner_up = max((x for i, x in enumerate(f) if i != li), default=0.0)
            if runner_up > 0.0 and f[li] < ambiguity_ratio * runner_up:
                st["ambiguous"] += 1
                continue
            kept.append(word)
        selected[code] = kept
        stats[code] = st
    return selected, stats


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    def count(frac: float) -> int:
        if frac <= 0.0 or n == 0:
            return 0
        return max(1, int(round(n * frac)))

    n_test = count(test_fraction)
    n_val = count(val_fraction)
    # keep at least one training word when possible
    while n_test + n_val >= n and n_test + n_val > 0:
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def build_words_dataset(
    languages: Iterable[str] = DEFAULT_LANGUAGES,
    per_language: int = DEFAULT_PER_LANGUAGE,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    *,
    ambiguity_ratio: float = DEFAULT_AMBIGUITY_RATIO,
) -> tuple[list[str], list[str], list[str]]:
    """Build the ``words`` dataset: returns parallel lists ``(texts, labels, splits)``.

    ``texts`` are lowercase words, ``labels`` English language names
    (``"English"``, ``"German"``, ...; the code itself for a language not in
    :data:`LANGUAGE_NAMES`), ``splits`` one of ``"train"``, ``"val"``,
    ``"test"``. Every language contributes exactly ``per_language`` words
    (ValueError if wordfreq cannot supply that many). See the module docstring
    for the filtering, de-duplication and split rules. Deterministic: the same
    arguments always give the same output.
    """
    langs = _check_args(languages, per_language, val_fraction, test_fraction, ambiguity_ratio)
    ratio = float(ambiguity_ratio)

    selected, _ = _select_words(langs, per_language, ratio, "small")
    if any(len(words) < per_language for words in selected.values()):
        selected, _ = _select_words(langs, per_language, ratio, "best")
    short = {c: len(w) for c, w in selected.items() if len(w) < per_language}
    if short:
        raise ValueError(
            f"wordfreq cannot supply per_language={per_language} words for "
            f"{short} after filtering and de-duplication; use a smaller per_language"
        )

    rng = random.Random(seed)
    rows: list[tuple[str, str, str]] = []
    for code in langs:
        words = list(selected[code])
        rng.shuffle(words)
        n_val, n_test = _split_counts(len(words), float(val_fraction), float(test_fraction))
        label = LANGUAGE_NAMES.get(code, code)
        for i, word in enumerate(words):
            if i < n_test:
                split = "test"
            elif i < n_test + n_val:
                split = "val"
            else:
                split = "train"
            rows.append((word, label, split))
    rng.shuffle(rows)

    texts = [r[0] for r in rows]
    labels = [r[1] for r in rows]
    splits = [r[2] for r in rows]
    return texts, labels, splits


def words_dataset_stats(
    languages: Iterable[str] = DEFAULT_LANGUAGES,
    per_language: int = DEFAULT_PER_LANGUAGE,
    *,
    ambiguity_ratio: float = DEFAULT_AMBIGUITY_RATIO,
) -> dict[str, dict[str, int]]:
    """Per-language counts of candidates dropped while building the dataset.

    Returns ``{code: {"kept", "filtered", "other_language", "ambiguous"}}``
    (``other_language``: shared word owned by another language;
    ``ambiguous``: shared word dropped everywhere by the 2x rule).
    """
    langs = _check_args(languages, per_language, 0.0, 0.0, ambiguity_ratio)
    selected, stats = _select_words(langs, per_language, float(ambiguity_ratio), "small")
    if any(len(words) < per_language for words in selected.values()):
        selected, stats = _select_words(langs, per_language, float(ambiguity_ratio), "best")
    return {code: {"kept": len(selected[code]), **stats[code]} for code in langs}
