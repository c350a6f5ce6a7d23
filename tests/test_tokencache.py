from rnnkit.tokencache import tokenize_corpus
from rnnkit.tokenizers import make_tokenizer


def test_second_run_comes_from_cache_and_options_change_the_key(tmp_path):
    texts = ["ㅋㅋㅋㅋㅋ 재밌다", "별로 였어요!!!!", "좋아요"]
    tok = make_tokenizer({"name": "whitespace", "squeeze_repeats": 2})
    logs = []
    first = tokenize_corpus(tok, texts, cache_root=tmp_path, log=logs.append, progress=False)
    assert first[0] == ["ㅋㅋ", "재밌다"] and first[1] == ["별로", "였어요!!"]
    assert "docs/s" in logs[-1]
    again = tokenize_corpus(tok, texts, cache_root=tmp_path, log=logs.append, progress=False)
    assert again == first and "from cache" in logs[-1]
    other = make_tokenizer({"name": "whitespace", "squeeze_repeats": 3})
    tokenize_corpus(other, texts, cache_root=tmp_path, log=logs.append, progress=False)
    assert "docs/s" in logs[-1]  # different settings: tokenized afresh
    tokenize_corpus(tok, texts[:2], cache_root=tmp_path, log=logs.append, progress=False)
    assert "docs/s" in logs[-1]  # different texts: tokenized afresh
    assert len(list((tmp_path / "tokens").iterdir())) == 3


def test_no_cache_writes_nothing(tmp_path):
    tokenize_corpus(make_tokenizer("char"), ["ab"], cache=False, cache_root=tmp_path, log=lambda m: None,
                    progress=False)
    assert not (tmp_path / "tokens").exists()


def test_damaged_entry_is_rebuilt(tmp_path):
    tok = make_tokenizer("char")
    tokenize_corpus(tok, ["ab"], cache_root=tmp_path, log=lambda m: None, progress=False)
    entry = next((tmp_path / "tokens").iterdir())
    entry.write_bytes(b"garbage")
    assert tokenize_corpus(tok, ["ab"], cache_root=tmp_path, log=lambda m: None, progress=False) == [["a", "b"]]


def test_truncated_or_altered_entries_are_rebuilt_and_an_unwritable_cache_is_skipped(tmp_path):
    import gzip
    import json

    tok = make_tokenizer("char")
    texts = ["ab", "cde"]
    tokenize_corpus(tok, texts, cache_root=tmp_path, log=lambda m: None, progress=False)
    entry = next((tmp_path / "tokens").iterdir())
    good = entry.read_bytes()
    altered = gzip.compress(json.dumps([["x"], ["y"]]).encode())  # right length, wrong tokens, no checksum
    for damaged in (good[: len(good) // 2], good[:-4] + b"\0\0\0\0", gzip.compress(b"null"), altered):
        entry.write_bytes(damaged)
        logs = []
        assert tokenize_corpus(tok, texts, cache_root=tmp_path, log=logs.append, progress=False) == [
            ["a", "b"], ["c", "d", "e"]]
        assert "damaged" in logs[0]
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    logs = []
    assert tokenize_corpus(tok, ["fg"], cache_root=blocked, log=logs.append, progress=False) == [["f", "g"]]
    assert "could not write the token cache" in logs[-1]


def test_append_chars_shares_the_plain_tokenizers_entry(tmp_path):
    texts = ["ㅋㅋㅋㅋㅋ 재밌다", "좋아요"]
    plain = make_tokenizer({"name": "whitespace", "squeeze_repeats": 2})
    chars = make_tokenizer({"name": "whitespace", "squeeze_repeats": 2, "append_chars": True})
    logs = []
    tokenize_corpus(plain, texts, cache_root=tmp_path, log=logs.append, progress=False)
    got = tokenize_corpus(chars, texts, cache_root=tmp_path, log=logs.append, progress=False)
    assert "from cache" in logs[-1] and len(list((tmp_path / "tokens").iterdir())) == 1
    assert got == chars.batch(texts) and got[1] == ["좋아요", "<chars>", "좋", "아", "요"]
