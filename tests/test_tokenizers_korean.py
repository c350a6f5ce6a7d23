"""Korean tokenizers: preprocessing, syllable, kiwi, okt, sentencepiece, settings round-trips, fingerprints."""

import json
import pickle
import random
import subprocess
import sys

import pytest

from rnnkit.errors import RnnkitError
from rnnkit.tokenizers import (
    TOKENIZERS,
    CharTokenizer,
    KiwiTokenizer,
    OktTokenizer,
    SentencePieceTokenizer,
    SyllableTokenizer,
    WhitespaceTokenizer,
    build_tokenizer,
    make_tokenizer,
)

REVIEWS = [
    "이 영화 정말 재밌어요",
    "배우들 연기가 너무 좋았고 결말도 감동적이었다ㅋㅋㅋㅋ",
    "",
    "별로였어요... 시간 아까움!!!!!",
    "스토리는 뻔하지만 음악이 최고",
]


def korean_sentences(n=300, seed=0):
    """Short synthetic movie-review sentences with enough variety to learn a small vocabulary."""
    rng = random.Random(seed)
    subjects = ["영화", "배우", "연기", "스토리", "감독", "음악", "결말", "장면", "주인공", "대사", "촬영", "각본",
                "액션", "연출", "캐릭터", "분위기"]
    particles = ["가", "는", "도", "이", "만", "까지"]
    predicates = ["정말 좋아요", "너무 지루해요", "최고예요", "별로였어요", "재밌었어요", "감동적이에요", "아쉬웠어요",
                  "훌륭했다", "평범했다", "기대 이상이었다", "다시 보고 싶다", "시간이 아깝다", "완벽했습니다"]
    tails = ["ㅋㅋ", "!!", "", "...", " 강추", " 비추", "ㅠㅠ"]
    return [
        f"{rng.choice(subjects)}{rng.choice(particles)} {rng.choice(['', '진짜 ', '그냥 ', '꽤 '])}"
        f"{rng.choice(predicates)}{rng.choice(tails)}"
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def kiwi():
    pytest.importorskip("kiwipiepy")
    tok = KiwiTokenizer()
    tok("워밍업")  # loads the model once for the whole module
    return tok


@pytest.fixture(scope="module")
def sp_tokenizer():
    pytest.importorskip("sentencepiece")
    return SentencePieceTokenizer.train(korean_sentences(), vocab_size=120, seed=7)


# --- preprocessing ---------------------------------------------------------


def test_squeeze_repeats_collapses_long_runs_only():
    tok = CharTokenizer(squeeze_repeats=2)
    assert tok.prepare("ㅋㅋㅋㅋㅋ") == "ㅋㅋ"
    assert tok.prepare("!!!!!") == "!!"
    assert tok.prepare("아아아아") == "아아"
    assert tok.prepare("좋아요ㅠㅠ 굿!") == "좋아요ㅠㅠ 굿!"  # runs of <= 2 untouched
    assert CharTokenizer(squeeze_repeats=1).prepare("ㅋㅋㅋ하하") == "ㅋ하"
    assert WhitespaceTokenizer(squeeze_repeats=3)("와아아아아아 대박!!!!!!") == ["와아아아", "대박!!!"]
    assert CharTokenizer().prepare("ㅋㅋㅋㅋ") == "ㅋㅋㅋㅋ"  # off by default
    for bad in (0, -1, 2.5, True, "2"):
        with pytest.raises(RnnkitError, match="squeeze_repeats"):
            CharTokenizer(squeeze_repeats=bad)


def test_normalization_forms():
    decomposed = "\u1112\u1161\u11ab\u1100\u1173\u11af"  # "한글" as conjoining jamo
    assert CharTokenizer()(decomposed) == ["한", "글"]  # NFC by default
    assert CharTokenizer(normalize=None)(decomposed) == list(decomposed)
    full_width = "ＡＢ１２"
    assert CharTokenizer()(full_width) == list(full_width)  # NFC keeps compatibility characters
    assert CharTokenizer(normalize="NFKC")(full_width) == ["A", "B", "1", "2"]
    # Squeezing runs after normalization: the composed syllables are what repeat.
    assert CharTokenizer(squeeze_repeats=2).prepare("\u1112\u1161" * 4) == "하하"
    with pytest.raises(RnnkitError, match="normalize"):
        CharTokenizer(normalize="NFD")


def test_squeeze_repeats_is_in_settings_only_when_set():
    assert CharTokenizer().settings == {"name": "char", "lowercase": False, "normalize": "NFC"}
    tok = make_tokenizer({"name": "whitespace", "squeeze_repeats": 2, "normalize": "NFKC"})
    assert tok.settings == {"name": "whitespace", "lowercase": False, "normalize": "NFKC", "squeeze_repeats": 2}
    assert make_tokenizer(tok.settings)("하하하하 ＡＡＡ") == ["하하", "AA"]
    # NFKC turns compatibility jamo (ㅋ U+314B) into conjoining jamo (ᄏ U+110F): why NFC is the default.
    assert tok("ㅋㅋㅋ") == ["\u110f\u110f"]


# --- syllable -------------------------------------------------------------


def test_syllable_tokenizer_marks_word_boundaries():
    assert SyllableTokenizer()("좋은 영화") == ["좋", "은", "▁", "영", "화"]
    assert SyllableTokenizer()("  좋은\t\n영화  최고 ") == ["좋", "은", "▁", "영", "화", "▁", "최", "고"]
    assert SyllableTokenizer(keep_space=False)("좋은 영화") == ["좋", "은", "영", "화"]
    assert SyllableTokenizer()("   ") == []
    assert SyllableTokenizer(squeeze_repeats=2)("ㅋㅋㅋㅋ 웃겨") == ["ㅋ", "ㅋ", "▁", "웃", "겨"]
    assert make_tokenizer({"name": "syllable", "keep_space": False}).settings["keep_space"] is False


# --- kiwi -----------------------------------------------------------------


def test_kiwi_morphemes_and_pos_tags(kiwi):
    tokens = kiwi("이 영화 정말 재밌어요")
    assert "영화" in tokens and "정말" in tokens
    assert len(tokens) > len("이 영화 정말 재밌어요".split())  # split below word level
    tagged = make_tokenizer({**kiwi.settings, "pos_tags": True})("이 영화 정말 재밌어요")
    assert "영화/NNG" in tagged
    assert [t.rsplit("/", 1)[0] for t in tagged] == tokens
    assert kiwi("") == [] and kiwi("   ") == []


def test_kiwi_batch_matches_single_calls_in_order(kiwi):
    texts = REVIEWS + list(reversed(REVIEWS)) + korean_sentences(40, seed=3)
    batched = kiwi.batch(texts)
    assert batched == [kiwi(t) for t in texts]
    assert batched[0] != batched[1]  # order kept, not just the same multiset
    assert kiwi.batch([]) == []
    assert kiwi.batch(t for t in REVIEWS[:2]) == batched[:2]  # any iterable


def test_kiwi_is_built_once_and_pickles_without_the_model(kiwi):
    backend = kiwi.backend
    kiwi("한 번 더")
    assert kiwi.backend is backend
    assert "backend" not in json.dumps(kiwi.settings)
    clone = pickle.loads(pickle.dumps(kiwi))
    assert clone._backend is None  # rebuilt lazily in the new process
    assert clone.settings == kiwi.settings


def test_kiwi_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "kiwipiepy", None)  # makes `import kiwipiepy` fail
    with pytest.raises(RnnkitError, match=r"needs kiwipiepy: pip install kiwipiepy"):
        KiwiTokenizer()("영화")


def test_kiwi_num_workers_is_validated_and_not_in_fingerprint():
    with pytest.raises(RnnkitError, match="num_workers"):
        KiwiTokenizer(num_workers=-1)
    assert KiwiTokenizer(num_workers=2).fingerprint == KiwiTokenizer().fingerprint


# --- okt ------------------------------------------------------------------


def test_okt_without_konlpy_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "konlpy", None)
    monkeypatch.setitem(sys.modules, "konlpy.tag", None)
    with pytest.raises(RnnkitError, match=r"pip install 'rnnkit\[okt\]'"):
        OktTokenizer()("영화")


def test_okt_without_java_is_a_one_line_error(monkeypatch):
    jpype = pytest.importorskip("jpype")
    pytest.importorskip("konlpy")

    def no_jvm(*args, **kwargs):
        raise jpype.JVMNotFoundException("No JVM shared library file (libjvm.so) found.")

    def must_not_start(*args, **kwargs):
        raise AssertionError("tried to start a JVM")

    # A machine without Java: nothing on PATH, no JAVA_HOME, jpype finds no libjvm. The real JVM is never touched.
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(jpype, "isJVMStarted", lambda: False)
    monkeypatch.setattr(jpype, "getDefaultJVMPath", no_jvm)
    monkeypatch.setattr(jpype, "startJVM", must_not_start)
    with pytest.raises(RnnkitError) as err:
        OktTokenizer()("영화")
    message = str(err.value)
    assert "\n" not in message and err.value.__cause__ is None and err.value.__context__ is None
    assert "Java runtime (JDK 8+)" in message and "apt-get install default-jre" in message


def test_okt_jvm_start_failure_is_a_one_line_error(monkeypatch):
    jpype = pytest.importorskip("jpype")
    pytest.importorskip("konlpy")

    def broken_start(*args, **kwargs):
        raise OSError("JVM DLL not found: /opt/broken/libjvm.so\n  (some detail)")

    monkeypatch.setattr(jpype, "isJVMStarted", lambda: False)
    monkeypatch.setattr(jpype, "getDefaultJVMPath", lambda: "/opt/broken/libjvm.so")
    monkeypatch.setattr(jpype, "startJVM", broken_start)
    with pytest.raises(RnnkitError, match=r"Java runtime \(JDK 8\+\).*starting the JVM failed") as err:
        OktTokenizer()("영화")
    assert "\n" not in str(err.value)


def test_okt_real_run():
    pytest.importorskip("konlpy")
    jpype = pytest.importorskip("jpype")
    from rnnkit.tokenizers import _find_jvm

    if not jpype.isJVMStarted() and _find_jvm(jpype) is None:
        pytest.skip("no Java runtime for konlpy's Okt")
    tok = OktTokenizer()
    tokens = tok("이 영화 정말 재밌어요")
    assert "영화" in tokens
    tagged = make_tokenizer({**tok.settings, "pos_tags": True, "stem": True, "norm": True})
    assert "영화/Noun" in tagged("이 영화 정말 재밌어요")
    assert "되다/Verb" in tagged("이것도 되나욬ㅋㅋ")  # norm + stem
    assert tok.batch(REVIEWS[:2]) == [tok(t) for t in REVIEWS[:2]]
    assert tok("") == []


# --- sentencepiece ----------------------------------------------------------


def test_sentencepiece_training_is_deterministic(sp_tokenizer):
    again = SentencePieceTokenizer.train(korean_sentences(), vocab_size=120, seed=7)
    assert again.settings["model"] == sp_tokenizer.settings["model"]
    assert again.fingerprint == sp_tokenizer.fingerprint
    pieces = sp_tokenizer("영화가 정말 좋아요ㅋㅋ")
    assert "".join(pieces).replace("▁", " ").strip() == "영화가 정말 좋아요ㅋㅋ"
    assert len(pieces) < len("영화가 정말 좋아요ㅋㅋ")  # learned multi-character pieces
    assert sp_tokenizer.backend.get_piece_size() == 120
    other = SentencePieceTokenizer.train(korean_sentences(seed=1), vocab_size=120, seed=7)
    assert other.settings["model"] != sp_tokenizer.settings["model"]  # the model does depend on the texts


def test_sentencepiece_round_trips_through_json_settings(sp_tokenizer):
    settings = json.loads(json.dumps(sp_tokenizer.settings))
    assert isinstance(settings["model"], str) and settings["vocab_size"] == 120
    restored = make_tokenizer(settings)
    texts = REVIEWS + korean_sentences(20, seed=5)
    assert restored.batch(texts) == sp_tokenizer.batch(texts) == [sp_tokenizer(t) for t in texts]
    assert restored.settings == sp_tokenizer.settings and restored.fingerprint == sp_tokenizer.fingerprint
    assert pickle.loads(pickle.dumps(restored))("배우 연기") == restored("배우 연기")
    assert "chars>" in repr(restored)  # the model is not dumped into reprs


def test_build_tokenizer_trains_only_when_needed(sp_tokenizer):
    settings = {"name": "sentencepiece", "vocab_size": 120, "seed": 7}
    trained = build_tokenizer(settings, korean_sentences())
    assert trained.settings["model"] == sp_tokenizer.settings["model"]
    assert build_tokenizer(trained.settings, None).settings == trained.settings  # has a model: no training
    assert build_tokenizer({"name": "syllable"}, None)("좋은 영화")[2] == "▁"
    with pytest.raises(RnnkitError, match="must be trained"):
        build_tokenizer(settings, None)
    with pytest.raises(RnnkitError, match="not trained"):
        make_tokenizer(settings)("영화")


def test_sentencepiece_vocab_too_large_is_a_clear_error():
    pytest.importorskip("sentencepiece")
    with pytest.raises(RnnkitError, match=r"vocab_size=8000 is too large.*lower vocab_size") as err:
        SentencePieceTokenizer.train(korean_sentences(), vocab_size=8000)
    assert "\n" not in str(err.value) and err.value.__cause__ is None
    with pytest.raises(RnnkitError, match="no non-empty training texts"):
        SentencePieceTokenizer.train(["", "  "], vocab_size=50)


def test_sentencepiece_damaged_model_is_a_clear_error():
    pytest.importorskip("sentencepiece")
    with pytest.raises(RnnkitError, match="damaged"):
        make_tokenizer({"name": "sentencepiece", "model": "bm90IGEgbW9kZWw="})("영화")


# --- all tokenizers ---------------------------------------------------------


def _available_tokenizers(sp_settings):
    settings = [
        {"name": "char", "squeeze_repeats": 2},
        {"name": "whitespace", "lowercase": True},
        {"name": "syllable", "keep_space": True, "squeeze_repeats": 3},
        {"name": "syllable", "keep_space": False},
    ]
    try:
        import kiwipiepy  # noqa: F401

        settings += [{"name": "kiwi", "pos_tags": True, "squeeze_repeats": 2}, {"name": "kiwi"}]
    except ImportError:
        pass
    if sp_settings is not None:
        settings.append(sp_settings)
    return settings


def test_settings_round_trip_gives_identical_output(request):
    sp_settings = None
    try:
        import sentencepiece  # noqa: F401

        sp_settings = {**request.getfixturevalue("sp_tokenizer").settings, "squeeze_repeats": 2}
    except ImportError:
        pass
    texts = REVIEWS + korean_sentences(10, seed=9)
    for settings in _available_tokenizers(sp_settings):
        tok = make_tokenizer(settings)
        saved = json.loads(json.dumps(tok.settings, ensure_ascii=False))
        again = make_tokenizer(saved)
        assert type(again) is type(tok) and again.settings == tok.settings, settings
        assert again.batch(texts) == tok.batch(texts) == [tok(t) for t in texts], settings
        assert again.fingerprint == tok.fingerprint, settings
    assert {"char", "whitespace", "syllable", "kiwi", "okt", "sentencepiece"} <= set(TOKENIZERS)
    # wordpiece's round trip is in tests/test_pretrained.py (it needs an encoder's tokenizer.json).
    assert [cls.name for cls in TOKENIZERS.values() if cls.needs_training] == ["sentencepiece", "wordpiece"]


def test_unknown_option_is_a_clear_error():
    with pytest.raises(RnnkitError, match="has no option 'pos_tag'"):
        make_tokenizer({"name": "kiwi", "pos_tag": True})


def test_fingerprint_is_short_stable_and_tracks_options(monkeypatch):
    fp = SyllableTokenizer().fingerprint
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert SyllableTokenizer().fingerprint == fp
    assert SyllableTokenizer(keep_space=False).fingerprint != fp
    assert SyllableTokenizer(squeeze_repeats=2).fingerprint != fp
    assert SyllableTokenizer(normalize="NFKC").fingerprint != fp
    assert CharTokenizer().fingerprint != fp
    assert KiwiTokenizer(pos_tags=True).fingerprint != KiwiTokenizer().fingerprint  # no kiwi needed for this
    assert OktTokenizer(stem=True).fingerprint != OktTokenizer().fingerprint
    # Library versions count too: the same settings under another kiwipiepy must not share a cache entry.
    base = KiwiTokenizer().fingerprint
    monkeypatch.setattr("rnnkit.tokenizers._dist_version", lambda dist: "0.0.0-other")
    assert KiwiTokenizer().fingerprint != base
    assert SyllableTokenizer().fingerprint == fp  # char-level tokenizers depend on no library


def test_import_stays_light():
    code = ("import sys, rnnkit.tokenizers; heavy = [m for m in ('kiwipiepy', 'sentencepiece', 'konlpy', 'jpype',"
            " 'torch') if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_append_chars_adds_the_characters_after_the_tokens_and_round_trips():
    from rnnkit.tokenizers import CHARS, WithChars

    tok = make_tokenizer({"name": "whitespace", "squeeze_repeats": 2, "append_chars": True})
    assert isinstance(tok, WithChars)
    assert tok("좋은 영화ㅋㅋㅋ") == ["좋은", "영화ㅋㅋ", CHARS, "좋", "은", "▁", "영", "화", "ㅋ", "ㅋ"]
    assert tok.batch(["좋은 영화", ""]) == [tok("좋은 영화"), [CHARS]]
    again = make_tokenizer(json.loads(json.dumps(tok.settings, ensure_ascii=False)))
    assert again.settings == tok.settings and again.fingerprint == tok.fingerprint
    assert tok.fingerprint != WhitespaceTokenizer(squeeze_repeats=2).fingerprint  # its own cache entries
    assert tok.prepare("ㅋㅋㅋ") == "ㅋㅋ"
    assert pickle.loads(pickle.dumps(tok))("좋은 영화") == tok("좋은 영화")
    with pytest.raises(RnnkitError, match="append_chars must be true or false"):
        make_tokenizer({"name": "whitespace", "append_chars": "yes"})
