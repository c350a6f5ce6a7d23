import pytest

from rnnkit.errors import RnnkitError
from rnnkit.tokenizers import CharTokenizer, WhitespaceTokenizer, make_tokenizer
from rnnkit.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocabulary


def test_specials_have_fixed_ids_and_unknown_maps_to_unk():
    v = Vocabulary.build([list("abca"), list("ab")], SPECIALS)
    assert [v.index(t) for t in (PAD, UNK, BOS, EOS)] == [0, 1, 2, 3]
    assert v.index("a") == 4  # most frequent first
    assert v.index("ß") == 1
    assert v.encode("az") == [4, 1]


def test_min_freq_and_max_size():
    seqs = [list("aaab"), list("ac")]
    v = Vocabulary.build(seqs, SPECIALS, min_freq=2)
    assert "a" in v and "b" not in v and "c" not in v
    capped = Vocabulary.build(seqs, SPECIALS, max_size=5)
    assert len(capped) == 5 and capped.tokens[4] == "a"


def test_json_round_trip(tmp_path):
    v = Vocabulary.build([["안녕", "하세요"], ["안녕"]], SPECIALS)
    v.save(tmp_path / "v.json")
    w = Vocabulary.load(tmp_path / "v.json")
    assert w == v and w.index("하세요") == v.index("하세요") and w.unk_index == 1


def test_label_vocabulary_has_no_unk():
    labels = Vocabulary(["neg", "pos"])
    assert labels.index("pos") == 1
    with pytest.raises(KeyError):
        labels.index("neutral")


def test_malformed_vocabulary_json_is_a_clear_error():
    with pytest.raises(RnnkitError, match="malformed vocabulary"):
        Vocabulary.from_dict({"specials": []})


def test_char_tokenizer_normalizes_unicode():
    decomposed = "Be\u0301langer"  # e + combining acute
    assert CharTokenizer()(decomposed) == list("Bélanger")
    assert CharTokenizer(lowercase=True)("ÉA") == ["é", "a"]


def test_whitespace_tokenizer_and_registry():
    assert WhitespaceTokenizer()("  a  b\tc ") == ["a", "b", "c"]
    tok = make_tokenizer({"name": "char", "lowercase": True})
    assert tok.settings == {"name": "char", "lowercase": True, "normalize": "NFC"}
    assert make_tokenizer(tok.settings)("AB") == ["a", "b"]
    with pytest.raises(RnnkitError, match="unknown tokenizer"):
        make_tokenizer("bpe")
