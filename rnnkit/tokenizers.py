"""Text -> tokens, behind one small interface.

A tokenizer is a callable ``str -> list[str]`` with ``batch(texts)`` and a
JSON-able ``settings`` dict; the settings are saved in the run folder so
prediction tokenizes exactly as training did (``make_tokenizer(settings)``
rebuilds an identical tokenizer). Add a tokenizer by subclassing
:class:`Tokenizer` and listing it in ``TOKENIZERS``.

Every tokenizer first runs :meth:`Tokenizer.prepare`: Unicode normalization
(``normalize``: ``"NFC"`` by default, ``"NFKC"``, or ``None`` for none), then
optional lowercasing, then optional squeezing of repeated characters
(``squeeze_repeats=2``: ``"ㅋㅋㅋㅋㅋ" -> "ㅋㅋ"``). NFC is the right form for Korean:
NFKC also folds full-width letters and digits, but turns the compatibility
jamo of "ㅋㅋ" or "ㅠㅠ" into conjoining jamo.

Tokenizers (registry key: class):

* ``char``: :class:`CharTokenizer`, one token per character, spaces included.
* ``whitespace``: :class:`WhitespaceTokenizer`, runs of non-space characters.
* ``syllable``: :class:`SyllableTokenizer`, one token per character with "▁"
  marking word boundaries.
* ``kiwi``: :class:`KiwiTokenizer`, Korean morphemes from kiwipiepy.
* ``okt``: :class:`OktTokenizer`, Korean morphemes from KoNLPy's Okt (Java).
* ``sentencepiece``: :class:`SentencePieceTokenizer`, a unigram model trained
  on the training texts and stored inside its settings.

Any of them takes ``append_chars=True``: its tokens, then :data:`CHARS`, then the
text's characters (:class:`WithChars`), the input of a model with a character
branch beside its word encoder (``char_branch``).

The optional back ends (kiwipiepy, konlpy, sentencepiece) are imported only
when a tokenizer that needs them is first used, so ``import rnnkit.tokenizers``
stays light.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import io
import json
import re
import threading
import unicodedata
from functools import lru_cache
from typing import Any, ClassVar, Iterable, Optional, Sequence

from .errors import RnnkitError

NORMALIZATION_FORMS = ("NFC", "NFKC")
SPACE_MARKER = "▁"  # U+2581, the word-boundary marker sentencepiece uses too

# Bump when a change here alters the tokens produced for unchanged settings: it invalidates cached corpora.
_FINGERPRINT_SCHEME = 1


@lru_cache(maxsize=None)
def _squeeze_pattern(n: int) -> "re.Pattern[str]":
    # A character followed by n or more copies of itself: a run longer than n.
    return re.compile(r"(.)\1{%d,}" % n, re.DOTALL)


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


class Tokenizer:
    name: ClassVar[str] = ""
    #: True when the tokenizer must be fitted on training texts first (see :func:`build_tokenizer`).
    needs_training: ClassVar[bool] = False
    #: Distributions whose versions change the tokens; they go into :attr:`fingerprint`.
    libraries: ClassVar[tuple[str, ...]] = ()
    #: Settings that change speed only, never the tokens; left out of :attr:`fingerprint`.
    runtime_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, lowercase: bool = False, normalize: Optional[str] = "NFC",
                 squeeze_repeats: Optional[int] = None):
        if normalize is not None and normalize not in NORMALIZATION_FORMS:
            raise RnnkitError(f"normalize={normalize!r} is not supported; use 'NFC', 'NFKC' or None (off)")
        if squeeze_repeats is not None and (
            isinstance(squeeze_repeats, bool) or not isinstance(squeeze_repeats, int) or squeeze_repeats < 1
        ):
            raise RnnkitError(f"squeeze_repeats={squeeze_repeats!r} must be a positive integer or None (off)")
        self.lowercase = lowercase
        self.normalize = normalize
        self.squeeze_repeats = squeeze_repeats

    def prepare(self, text: str) -> str:
        # NFC first: "é" typed as e + combining accent must hit the same ids as "é".
        text = unicodedata.normalize(self.normalize, text) if self.normalize else text
        if self.lowercase:
            text = text.lower()
        if self.squeeze_repeats is not None:
            n = self.squeeze_repeats
            text = _squeeze_pattern(n).sub(lambda m: m.group(1) * n, text)
        return text

    def __call__(self, text: str) -> list[str]:
        raise NotImplementedError

    def batch(self, texts: Iterable[str]) -> list[list[str]]:
        return [self(t) for t in texts]

    def _base_settings(self) -> dict:
        out = {"name": self.name, "lowercase": self.lowercase, "normalize": self.normalize}
        if self.squeeze_repeats is not None:  # left out when off: settings saved before it existed stay identical
            out["squeeze_repeats"] = self.squeeze_repeats
        return out

    def _options(self) -> dict:
        """The subclass's own options, merged into :attr:`settings`."""
        return {}

    @property
    def settings(self) -> dict:
        return {**self._base_settings(), **self._options()}

    @property
    def fingerprint(self) -> str:
        """Short stable hex hash of everything that decides the tokens: a cache key for tokenized corpora.

        Covers the settings (less speed-only ones such as ``num_workers``), the versions of
        the back-end libraries and, when normalizing, Python's Unicode database version.
        """
        settings = {k: v for k, v in self.settings.items() if k not in self.runtime_settings}
        versions = {dist: _dist_version(dist) for dist in self.libraries}
        if self.normalize:
            versions["unicodedata"] = unicodedata.unidata_version
        blob = json.dumps({"scheme": _FINGERPRINT_SCHEME, "settings": settings, "versions": versions},
                          sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def __repr__(self) -> str:
        def short(v: Any) -> str:
            return f"<{len(v)} chars>" if isinstance(v, str) and len(v) > 60 else repr(v)

        args = ", ".join(f"{k}={short(v)}" for k, v in self.settings.items() if k != "name")
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


class SyllableTokenizer(Tokenizer):
    """One token per character (a Hangul syllable), whitespace dropped.

    Word boundaries survive as a "▁" token before each word after the first:
    ``"좋은 영화" -> ["좋", "은", "▁", "영", "화"]``; ``keep_space=False`` drops the marker.
    """

    name = "syllable"

    def __init__(self, keep_space: bool = True, **base):
        super().__init__(**base)
        self.keep_space = bool(keep_space)

    def _options(self) -> dict:
        return {"keep_space": self.keep_space}

    def __call__(self, text: str) -> list[str]:
        out: list[str] = []
        for i, word in enumerate(self.prepare(text).split()):
            if i and self.keep_space:
                out.append(SPACE_MARKER)
            out.extend(word)
        return out


class _LazyBackend(Tokenizer):
    """A tokenizer whose heavy back end is built on first use, once per instance.

    The back end is never part of the settings, and pickling drops it (it is
    rebuilt on first use after unpickling), so these tokenizers can be sent to
    DataLoader workers or other processes.
    """

    def __init__(self, **base):
        super().__init__(**base)
        self._backend = None
        self._lock = threading.Lock()

    def _load_backend(self):
        raise NotImplementedError

    @property
    def backend(self):
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = self._load_backend()
        return self._backend

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_backend"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class KiwiTokenizer(_LazyBackend):
    """Korean morphemes from kiwipiepy: ``"이 영화 정말 재밌어요" -> ["이", "영화", "정말", "재밌", "어요"]``.

    ``pos_tags=True`` gives ``"form/TAG"`` tokens (``"영화/NNG"``). ``num_workers``
    is kiwi's thread count for :meth:`batch` (0 = all cores); it does not change the tokens.
    The Kiwi object is loaded on first use and shared by the tokenizers of one process
    that ask for the same ``num_workers``.
    """

    name = "kiwi"
    libraries = ("kiwipiepy", "kiwipiepy_model")
    runtime_settings = ("num_workers",)

    def __init__(self, pos_tags: bool = False, num_workers: int = 0, **base):
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise RnnkitError(f"kiwi num_workers={num_workers!r} must be 0 (all cores) or a positive integer")
        super().__init__(**base)
        self.pos_tags = bool(pos_tags)
        self.num_workers = num_workers

    def _options(self) -> dict:
        return {"pos_tags": self.pos_tags, "num_workers": self.num_workers}

    def _load_backend(self):
        try:
            from kiwipiepy import Kiwi
        except ImportError:
            raise RnnkitError("tokenizer 'kiwi' needs kiwipiepy: pip install kiwipiepy") from None
        return _shared_kiwi(Kiwi, self.num_workers)

    def _forms(self, tokens) -> list[str]:
        if self.pos_tags:
            return [f"{t.form}/{t.tag}" for t in tokens]
        return [t.form for t in tokens]

    def __call__(self, text: str) -> list[str]:
        return self._forms(self.backend.tokenize(self.prepare(text)))

    def batch(self, texts: Iterable[str]) -> list[list[str]]:
        texts = list(texts)
        if not texts:
            return []
        # The texts go to kiwi's thread pool, results come back in input order. Prepared as kiwi
        # pulls them, so its threads start at once instead of after a pass over every text: one call
        # over 40,000 NSMC reviews took 11.3-13.1 s against 13.9-14.4 s, the same tokens. The token
        # cache calls it 2,000 texts at a time, where one stream over the corpus measured no faster.
        return [self._forms(tokens) for tokens in self.backend.tokenize(self.prepare(t) for t in texts)]


_KIWIS: dict[int, Any] = {}
_KIWIS_LOCK = threading.Lock()


def _shared_kiwi(kiwi_class, num_workers: int):
    """One Kiwi per thread count per process: loading the model takes seconds and hundreds of MB."""
    with _KIWIS_LOCK:
        if num_workers not in _KIWIS:
            try:
                # Since kiwipiepy 0.21 num_workers=0 means single-threaded, which cannot run the batch
                # API; None picks every core. The model comes from the kiwipiepy_model package.
                _KIWIS[num_workers] = kiwi_class(num_workers=num_workers or None)
            except ImportError:
                raise RnnkitError("tokenizer 'kiwi' needs kiwi's model: pip install kiwipiepy_model") from None
        return _KIWIS[num_workers]


_JAVA_NEEDED = (
    "tokenizer 'okt' needs a Java runtime (JDK 8+): install one (e.g. `apt-get install default-jre`, "
    "`brew install openjdk` or `conda install openjdk`) or point JAVA_HOME at it"
)


def _find_jvm(jpype) -> Optional[str]:
    """Path of the JVM library jpype would start (JAVA_HOME, ``java`` on PATH, usual folders), or None."""
    try:
        return jpype.getDefaultJVMPath() or None
    except Exception:  # jpype.JVMNotFoundException, JVMNotSupportedException
        return None


class OktTokenizer(_LazyBackend):
    """Korean morphemes from KoNLPy's Okt (Open Korean Text), which runs in a JVM.

    ``pos_tags=True`` gives ``"form/Tag"`` tokens (``"영화/Noun"``); ``stem`` reduces
    verbs and adjectives to their dictionary form, ``norm`` normalizes slang spellings.
    """

    name = "okt"
    libraries = ("konlpy",)

    def __init__(self, pos_tags: bool = False, stem: bool = False, norm: bool = False, **base):
        super().__init__(**base)
        self.pos_tags = bool(pos_tags)
        self.stem = bool(stem)
        self.norm = bool(norm)

    def _options(self) -> dict:
        return {"pos_tags": self.pos_tags, "stem": self.stem, "norm": self.norm}

    def _load_backend(self):
        try:
            import jpype
            from konlpy.tag import Okt
        except ImportError:
            raise RnnkitError("tokenizer 'okt' needs konlpy: pip install 'rnnkit[okt]'") from None
        if not jpype.isJVMStarted() and _find_jvm(jpype) is None:
            raise RnnkitError(f"{_JAVA_NEEDED}; none was found")
        try:
            return Okt()
        except (OSError, RuntimeError, ValueError) as exc:  # the JVM would not start
            detail = " ".join(str(exc).split())[:200]
            raise RnnkitError(f"{_JAVA_NEEDED}; starting the JVM failed ({type(exc).__name__}: {detail})") from None

    def __call__(self, text: str) -> list[str]:
        text = self.prepare(text)
        if not text.strip():
            return []
        pairs = self.backend.pos(text, norm=self.norm, stem=self.stem)
        if self.pos_tags:
            return [f"{form}/{tag}" for form, tag in pairs]
        return [form for form, _ in pairs]


class SentencePieceTokenizer(_LazyBackend):
    """Unigram sentencepiece pieces, with the model trained on the training texts only.

    Train with :meth:`train` (or :func:`build_tokenizer`); the serialized model is
    kept base64-encoded in ``settings["model"]``, so ``make_tokenizer(settings)``
    restores it without any extra file. Training is deterministic: one thread, a
    fixed seed, every sentence used in order.
    """

    name = "sentencepiece"
    needs_training = True
    libraries = ("sentencepiece",)

    def __init__(self, model: Optional[str] = None, vocab_size: int = 8000, character_coverage: float = 0.9995,
                 seed: int = 0, **base):
        super().__init__(**base)
        self.model = model
        self.vocab_size = int(vocab_size)
        self.character_coverage = float(character_coverage)
        self.seed = int(seed)

    def _options(self) -> dict:
        return {"vocab_size": self.vocab_size, "character_coverage": self.character_coverage,
                "seed": self.seed, "model": self.model}

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000, character_coverage: float = 0.9995,
              seed: int = 0, model: Optional[str] = None, **base) -> "SentencePieceTokenizer":
        """Train a unigram model on ``texts`` (after :meth:`prepare`); ``model`` is ignored (re-trained)."""
        tok = cls(vocab_size=vocab_size, character_coverage=character_coverage, seed=seed, **base)
        spm = _import_sentencepiece()
        sentences = [s for s in (tok.prepare(t) for t in texts) if s.strip()]
        if not sentences:
            raise RnnkitError("cannot train the sentencepiece tokenizer: no non-empty training texts")
        buf = io.BytesIO()
        spm.set_random_generator_seed(tok.seed)
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences), model_writer=buf, model_type="unigram",
                vocab_size=tok.vocab_size, character_coverage=tok.character_coverage,
                # Deterministic: one thread, all sentences, in the given order.
                num_threads=1, input_sentence_size=0, shuffle_input_sentence=False,
                # prepare() already normalized the text; "identity" also keeps the model small.
                normalization_rule_name="identity", minloglevel=2,
            )
        except RuntimeError as exc:
            raise _sentencepiece_training_error(str(exc), tok.vocab_size) from None
        tok.model = base64.b64encode(buf.getvalue()).decode("ascii")
        return tok

    def _load_backend(self):
        if not self.model:
            raise RnnkitError("the sentencepiece tokenizer is not trained: use SentencePieceTokenizer.train(texts) "
                              "or build_tokenizer(settings, train_texts)")
        spm = _import_sentencepiece()
        try:
            return spm.SentencePieceProcessor(model_proto=base64.b64decode(self.model, validate=True))
        except (ValueError, RuntimeError, OSError):
            raise RnnkitError("the sentencepiece model in the tokenizer settings is damaged; re-train the run") from None

    def __call__(self, text: str) -> list[str]:
        return self.backend.encode(self.prepare(text), out_type=str)

    def batch(self, texts: Iterable[str]) -> list[list[str]]:
        prepared = [self.prepare(t) for t in texts]
        return self.backend.encode(prepared, out_type=str) if prepared else []


class WordPieceTokenizer(_LazyBackend):
    """A pretrained encoder's WordPiece pieces (``"unhappily" -> ["un", "##happily"]``), from its tokenizer.json.

    Goes with pretrained embeddings (``embeddings="minilm"``, :mod:`rnnkit.pretrained`): the pieces
    are the rows the encoder has vectors for. The tokenizer.json text is kept in ``settings["model"]``,
    so a saved run needs the ``tokenizers`` library but not the encoder. "Training" only reads it.
    """

    name = "wordpiece"
    needs_training = True
    libraries = ("tokenizers",)

    def __init__(self, encoder: str = "minilm", model: Optional[str] = None, **base):
        super().__init__(**base)
        self.encoder = encoder
        self.model = model

    def _options(self) -> dict:
        return {"encoder": self.encoder, "model": self.model}

    @classmethod
    def train(cls, texts: Iterable[str], encoder: str = "minilm", model: Optional[str] = None,
              **base) -> "WordPieceTokenizer":
        from .pretrained import wordpiece_json

        return cls(encoder=encoder, model=wordpiece_json(encoder), **base)

    def _load_backend(self):
        if not self.model:
            raise RnnkitError("the wordpiece tokenizer has no model: build it with build_tokenizer(settings, texts)")
        try:
            from tokenizers import Tokenizer as HFTokenizer
        except ImportError:
            raise RnnkitError("tokenizer 'wordpiece' needs tokenizers: pip install 'rnnkit[pretrained]'") from None
        try:
            backend = HFTokenizer.from_str(self.model)
        except Exception:  # tokenizers raises its own Exception type on a bad file
            raise RnnkitError("the wordpiece model in the tokenizer settings is damaged; re-train the run") from None
        backend.no_truncation()  # max_len is rnnkit's business
        backend.no_padding()
        return backend

    def __call__(self, text: str) -> list[str]:
        return self.backend.encode(self.prepare(text), add_special_tokens=False).tokens

    def batch(self, texts: Iterable[str]) -> list[list[str]]:
        prepared = [self.prepare(t) for t in texts]
        if not prepared:
            return []
        return [e.tokens for e in self.backend.encode_batch(prepared, add_special_tokens=False)]


def _import_sentencepiece():
    try:
        import sentencepiece
    except ImportError:
        raise RnnkitError("tokenizer 'sentencepiece' needs sentencepiece: pip install sentencepiece") from None
    return sentencepiece


class VocabularyTooLarge(RnnkitError):
    """sentencepiece cannot learn ``vocab_size`` pieces from the training texts; ``most`` is what it can."""

    def __init__(self, message: str, most: int):
        super().__init__(message)
        self.most = most


def _sentencepiece_training_error(message: str, vocab_size: int) -> RnnkitError:
    too_high = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", message)
    if too_high:
        return VocabularyTooLarge(f"sentencepiece vocab_size={vocab_size} is too large for these training texts "
                                  f"(at most {too_high.group(2)} pieces can be learned from them); lower vocab_size",
                                  int(too_high.group(2)))
    too_low = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", message)
    if too_low:
        return RnnkitError(f"sentencepiece vocab_size={vocab_size} is smaller than the {too_low.group(2)} "
                           "characters it must cover; raise vocab_size or lower character_coverage")
    detail = " ".join(message.split())[:300]
    return RnnkitError(f"sentencepiece training failed ({detail}); lower vocab_size or give more training text")


CHARS = "<chars>"
"""The token between a text's own tokens and its characters when ``append_chars`` is on."""


class WithChars(Tokenizer):
    """Another tokenizer's tokens, then :data:`CHARS`, then the text's characters as the
    ``syllable`` tokenizer gives them (spaces dropped, "▁" before each word after the first):
    ``"좋은 영화"`` with kiwi -> ``["좋/VA", "은/ETM", "영화/NNG", "<chars>", "좋", "은", "▁", "영", "화"]``.

    A model with ``char_branch`` splits each sequence at its last :data:`CHARS` (the characters
    hold none, so a word that reads the same cannot move the split) and reads the two parts
    with two encoders. Both parts share one vocabulary; each encoder has its own table.
    """

    def __init__(self, inner: Tokenizer):
        # No super().__init__: the text options are the inner tokenizer's, checked there.
        self.inner = inner
        self.name = inner.name
        self.libraries = inner.libraries
        self.runtime_settings = inner.runtime_settings
        self.lowercase, self.normalize, self.squeeze_repeats = inner.lowercase, inner.normalize, inner.squeeze_repeats
        self.chars = SyllableTokenizer(lowercase=inner.lowercase, normalize=inner.normalize,
                                       squeeze_repeats=inner.squeeze_repeats)

    @property
    def settings(self) -> dict:
        return {**self.inner.settings, "append_chars": True}

    def __call__(self, text: str) -> list[str]:
        return [*self.inner(text), CHARS, *self.chars(text)]

    def batch(self, texts: Iterable[str]) -> list[list[str]]:
        texts = list(texts)
        return self.append(self.inner.batch(texts), texts)

    def append(self, tokens: Sequence[Sequence[str]], texts: Sequence[str]) -> list[list[str]]:
        """``tokens`` (the inner tokenizer's, one list per text) with ``<chars>`` and each text's characters."""
        return [[*toks, CHARS, *self.chars(text)] for toks, text in zip(tokens, texts)]


TOKENIZERS: dict[str, type[Tokenizer]] = {
    cls.name: cls
    for cls in (CharTokenizer, WhitespaceTokenizer, SyllableTokenizer, KiwiTokenizer, OktTokenizer,
                SentencePieceTokenizer, WordPieceTokenizer)
}


def _split_settings(settings: dict | str) -> tuple[type[Tokenizer], dict]:
    if isinstance(settings, str):
        settings = {"name": settings}
    settings = dict(settings)
    name = settings.pop("name", None)
    if name not in TOKENIZERS:
        raise RnnkitError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")
    return TOKENIZERS[name], settings


def _check_options(cls: type[Tokenizer], options: dict) -> None:
    known = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            params = list(inspect.signature(klass.__init__).parameters.values())[1:]  # no self
            known.update(p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    unknown = sorted(set(options) - known)
    if unknown:
        raise RnnkitError(f"tokenizer {cls.name!r} has no option {', '.join(map(repr, unknown))}; "
                          f"its options are {', '.join(sorted(known))}")


def _append_chars(options: dict) -> bool:
    flag = options.pop("append_chars", False)
    if not isinstance(flag, bool):
        raise RnnkitError(f"tokenizer option append_chars must be true or false; got {flag!r}")
    return flag


def make_tokenizer(settings: dict | str) -> Tokenizer:
    """Build a tokenizer from its name or its saved ``settings`` dict."""
    cls, options = _split_settings(settings)
    chars = _append_chars(options)
    _check_options(cls, options)
    tokenizer = cls(**options)
    return WithChars(tokenizer) if chars else tokenizer


def build_tokenizer(settings: dict | str, train_texts: Optional[Sequence[str]] = None) -> Tokenizer:
    """Like :func:`make_tokenizer`, but trains the tokenizer on ``train_texts`` when it needs training.

    A trainable tokenizer (``needs_training``) whose settings carry no ``"model"``
    yet is trained here; settings that already hold a model are just rebuilt.
    """
    cls, options = _split_settings(settings)
    if not cls.needs_training or options.get("model"):
        return make_tokenizer(settings)
    if train_texts is None:
        raise RnnkitError(f"tokenizer {cls.name!r} must be trained first: give the training texts")
    chars = _append_chars(options)
    _check_options(cls, options)
    tokenizer = cls.train(train_texts, **options)
    return WithChars(tokenizer) if chars else tokenizer


_WORD = re.compile(r"[^\W\d_]+")
ENCODER_COVERAGE = 0.8
"""Share of the training words that must be whole pieces of a pretrained encoder for tokenizer=auto to use it.
English files measured 0.91-0.92 against MiniLM's vocabulary, Dutch, German and French reviews 0.36-0.54."""


def choose_tokenizer(texts: Sequence[str], sp_vocab_size: int = 8000,
                     encoders: Optional[dict[str, set]] = None) -> tuple[dict, str]:
    """``tokenizer="auto"``: the config settings that suit these training texts, and why (one line).

    * mostly Hangul -> ``kiwi`` morphemes with POS tags and squeezed repeats (the NSMC recipe);
    * Chinese or Japanese script, which has no spaces between words -> ``char``;
    * one short token per text (names, words) -> ``char``;
    * sentences whose words a pretrained encoder in ``encoders`` (name -> its pieces) knows as whole pieces
      (at least :data:`ENCODER_COVERAGE` of them) -> that encoder's ``wordpiece`` and its embeddings;
    * other sentences -> ``sentencepiece``, its vocabulary capped by the training text's variety: on SMS spam it
      measured 0.984 accuracy where whitespace words gave 0.945 (issue 15).
    """
    sample = [t for t in texts[:20000] if t]
    if not sample:
        raise RnnkitError("no training texts to choose a tokenizer from")
    letters = hangul = cjk = 0
    for text in sample[:5000]:
        for ch in text:
            if ch.isalpha():
                letters += 1
                code = ord(ch)
                if 0xAC00 <= code <= 0xD7A3 or 0x3130 <= code <= 0x318F:
                    hangul += 1
                elif 0x4E00 <= code <= 0x9FFF or 0x3040 <= code <= 0x30FF:
                    cjk += 1
    letters = max(letters, 1)
    words = [len(t.split()) for t in sample]
    mean_words = sum(words) / len(words)
    if hangul / letters > 0.3:
        return ({"tokenizer": "kiwi", "pos_tags": True, "squeeze_repeats": 3},
                f"kiwi morphemes ({hangul / letters:.0%} of letters are Hangul)")
    if cjk / letters > 0.3:
        return {"tokenizer": "char"}, f"char ({cjk / letters:.0%} of letters are Chinese/Japanese, written without spaces)"
    if mean_words <= 1.5:
        return {"tokenizer": "char"}, f"char (texts are single short tokens: {mean_words:.1f} words on average)"
    for name, pieces in (encoders or {}).items():
        words = [w for t in sample[:5000] for w in _WORD.findall(t.lower())]
        known = sum(w in pieces for w in words) / max(1, len(words))
        if known >= ENCODER_COVERAGE:
            return ({"tokenizer": "wordpiece", "embeddings": name},
                    f"wordpiece with pretrained {name} embeddings ({known:.0%} of the words are {name} pieces; "
                    f"sentences of {mean_words:.1f} words on average)")
    distinct = len({w for t in sample for w in t.split()})
    # sentencepiece refuses a vocabulary larger than the text can fill; a third of the distinct
    # words keeps whole frequent words as pieces and rare ones split into subwords.
    size = int(min(sp_vocab_size, max(256, distinct // 3)))
    return ({"tokenizer": "sentencepiece", "sp_vocab_size": size},
            f"sentencepiece, {size} pieces (sentences of {mean_words:.1f} words on average, {distinct:,} distinct words)")
