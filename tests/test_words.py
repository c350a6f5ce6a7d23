import json
import random
import time
from collections import Counter, defaultdict

import pytest

from rnnkit.words import (
    DEFAULT_LANGUAGES,
    LANGUAGE_NAMES,
    WORDS_INFO,
    build_words_dataset,
    is_valid_word,
    words_dataset_stats,
)

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def default():
    start = time.perf_counter()
    data = build_words_dataset()
    elapsed = time.perf_counter() - start
    return data, elapsed


def test_default_size_labels_and_speed(default):
    (texts, labels, splits), elapsed = default
    assert len(texts) == len(labels) == len(splits) == 10 * 3000
    counts = Counter(labels)
    expected = {LANGUAGE_NAMES[c] for c in DEFAULT_LANGUAGES}
    assert set(counts) == expected == {
        "English", "German", "French", "Spanish", "Italian",
        "Portuguese", "Dutch", "Polish", "Czech", "Turkish",
    }
    assert all(n == 3000 for n in counts.values())
    assert set(splits) == set(SPLITS)
    # Alone it takes about a second; the bound is loose so a busy box (the suite runs on all cores) does not fail
    # it, and still catches an accidental slow path such as a per-word regex compile.
    assert elapsed < 15.0, f"default build took {elapsed:.2f}s"


def test_words_are_clean(default):
    (texts, _, _), _ = default
    for w in texts:
        assert len(w) >= 2 and w.isalpha() and w == w.lower(), w
        assert is_valid_word(w)
    assert len(set(texts)) == len(texts)  # no word appears twice at all


def test_no_word_with_two_labels_or_in_two_splits(default):
    (texts, labels, splits), _ = default
    by_word_label, by_word_split = defaultdict(set), defaultdict(set)
    for w, l, s in zip(texts, labels, splits):
        by_word_label[w].add(l)
        by_word_split[w].add(s)
    assert all(len(v) == 1 for v in by_word_label.values())
    assert all(len(v) == 1 for v in by_word_split.values())


def test_split_fractions_per_language(default):
    (_, labels, splits), _ = default
    counts = Counter(zip(labels, splits))
    for label in set(labels):
        n = sum(counts[(label, s)] for s in SPLITS)
        assert abs(counts[(label, "val")] - 0.1 * n) <= 1
        assert abs(counts[(label, "test")] - 0.1 * n) <= 1
        assert abs(counts[(label, "train")] - 0.8 * n) <= 1
        for s in SPLITS:  # every label in every split
            assert counts[(label, s)] > 0


def test_determinism_and_seed(default):
    (texts, labels, splits), _ = default
    assert build_words_dataset(seed=0) == (texts, labels, splits)
    other = build_words_dataset(seed=1)
    # same words and labels, different assignment to splits
    assert sorted(zip(other[0], other[1])) == sorted(zip(texts, labels))
    split0 = dict(zip(texts, splits))
    split1 = dict(zip(other[0], other[2]))
    assert sum(split0[w] != split1[w] for w in texts) > 1000


def test_ambiguity_rule_holds(default):
    """Each kept word is >= 2x more frequent in its own language than in any other."""
    import wordfreq

    (texts, labels, _), _ = default
    code_of = {LANGUAGE_NAMES[c]: c for c in DEFAULT_LANGUAGES}
    rng = random.Random(123)
    for i in rng.sample(range(len(texts)), 300):
        word, own = texts[i], code_of[labels[i]]
        f_own = wordfreq.word_frequency(word, own, "small")
        others = [wordfreq.word_frequency(word, c, "small") for c in DEFAULT_LANGUAGES if c != own]
        assert f_own >= 2.0 * max(others), (word, own, f_own, others)


def test_known_shared_words():
    texts, labels, _ = build_words_dataset(["fr", "es", "pt"], per_language=300)
    label_of = dict(zip(texts, labels))
    # "de" is very frequent in all three: too ambiguous, dropped everywhere
    assert "de" not in label_of
    # each clearly-owned function word lands in its own language
    assert label_of.get("les") == "French"
    assert label_of.get("los") == "Spanish"
    assert label_of.get("não") == "Portuguese"


def test_custom_languages_and_small_fractions():
    texts, labels, splits = build_words_dataset(
        ["en", "sv"], per_language=20, seed=3, val_fraction=0.05, test_fraction=0.0
    )
    assert Counter(labels) == {"English": 20, "Swedish": 20}
    counts = Counter(zip(labels, splits))
    assert counts[("English", "val")] == counts[("Swedish", "val")] == 1
    assert "test" not in splits


def test_bad_arguments():
    with pytest.raises(ValueError):
        build_words_dataset(["en", "xx"], per_language=10)
    with pytest.raises(ValueError):
        build_words_dataset(["en", "en"], per_language=10)
    with pytest.raises(ValueError):
        build_words_dataset([], per_language=10)
    with pytest.raises(ValueError):
        build_words_dataset(per_language=0)
    with pytest.raises(ValueError):
        build_words_dataset(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError):
        build_words_dataset(val_fraction=-0.1)


def test_info_and_stats():
    json.dumps(WORDS_INFO)
    assert WORDS_INFO["name"] == "words"
    assert WORDS_INFO["per_language"] == 3000
    assert list(WORDS_INFO["languages"]) == list(DEFAULT_LANGUAGES)
    stats = words_dataset_stats(["en", "de"], per_language=200)
    for code in ("en", "de"):
        assert stats[code]["kept"] == 200
        assert set(stats[code]) == {"kept", "filtered", "other_language", "ambiguous"}


def test_is_valid_word():
    assert is_valid_word("straße") and is_valid_word("żółć") and is_valid_word("değil")
    assert not is_valid_word("a")
    assert not is_valid_word("don't")
    assert not is_valid_word("mp3")
    assert not is_valid_word("nº")
    assert not is_valid_word("слово")
