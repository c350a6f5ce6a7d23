"""The classifier: embedding -> dropout -> RNN encoder -> pooling -> MLP head.

Shapes, for a batch of ``B`` sequences padded to length ``T``::

    ids (B, T) --embedding--> (B, T, E) --rnn--> (B, T, D*H) --pool--> (B, D*H)
        --fc1/ReLU/dropout--> (B, head_hidden) --fc2--> logits (B, C)

where ``D`` is 2 for a bidirectional encoder and ``H`` the width of the RNN's
output per direction: ``hidden_size``, or ``proj_size`` for an LSTM with
projections. Padding never leaks into the
result: the RNN reads each row's valid steps only (the padded fast path of
:mod:`rnnkit.padded`, equal to packing) and every pooling looks only at the
valid positions of each row.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .calibration import probabilities
from .config import KERNELS, POOLINGS, locked_between_packed_layers
from .errors import RnnkitError
from .padded import column_gather, last_state, pool, run_padded, tracing, valid_mask  # noqa: F401 (column_gather: public here)

CHAR_STEP_COST = 0.1
"""A character step of the branch (one 96-wide BiLSTM layer) against a word step of the NSMC encoder (two
160-wide layers, run twice under adversarial training), measured under the profiler: about a tenth."""

MODEL_KEYS = (
    "cell", "backend", "nonlinearity", "embedding_dim", "hidden_size", "proj_size", "num_layers", "bidirectional",
    "rnn_dropout", "embedding_dropout", "locked_dropout", "token_dropout", "pooling", "head_hidden", "head_dropout",
    "ngram_order", "ngram_buckets", "head", "char_branch",
)


def make_rnn(cell: str, backend: str, input_size: int, hidden_size: int, num_layers: int = 1,
             bidirectional: bool = False, dropout: float = 0.0, nonlinearity: str = "tanh",
             proj_size: int = 0) -> nn.Module:
    """A batch-first recurrent layer: torch's fused one, or rnnkit's from-scratch twin.

    Both take the same arguments and have the same parameter names (``weight_hr_l0``
    for an LSTM with projections included), so a state dict trained with one backend
    loads into the other.
    """
    if backend == "torch":
        layers = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
    elif backend == "scratch":
        from . import nn as scratch

        layers = {"rnn": scratch.ElmanRNN, "lstm": scratch.LSTM, "gru": scratch.GRU}
    else:
        raise RnnkitError(f"backend must be torch or scratch; got {backend!r}")
    if cell not in layers:
        raise RnnkitError(f"cell must be rnn, lstm or gru; got {cell!r}")
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=True,
                  dropout=dropout if num_layers > 1 else 0.0)
    if cell == "rnn":
        kwargs["nonlinearity"] = nonlinearity
    if proj_size:
        if cell != "lstm":
            raise RnnkitError(f"proj_size works with cell=lstm only; got cell={cell}: use cell lstm or proj_size 0")
        # Only passed when set: torch's RNN and GRU refuse the argument even as 0.
        kwargs["proj_size"] = proj_size
    return layers[cell](input_size, hidden_size, **kwargs)


def rnn_output_width(rnn: nn.Module) -> int:
    """Features per direction in the outputs of ``rnn``: ``proj_size`` for an LSTM
    with projections, else ``hidden_size``."""
    return getattr(rnn, "proj_size", 0) or rnn.hidden_size


class Dropout(nn.Module):
    """``nn.Dropout`` with a CPU mask 4x cheaper to draw.

    torch's CPU dropout draws each keep/drop decision with ``bernoulli_``: 7.5 ms for one
    NSMC batch of embeddings (128 x 22 x 256), a tenth of a training step. Here each
    decision is 16 random bits compared with ``p * 65536`` (one 64-bit draw makes four),
    which is the same Bernoulli(1 - p) mask up to ``p`` rounded to 1/65536, from torch's
    seeded generator. On other devices it is ``F.dropout``.

    ``whole_vectors``: one decision per vector (the last dimension), e.g. per token of ``(B, T, E)``.
    ``locked``: one decision per row and feature of ``(B, T, F)``, shared by all ``T`` steps (a mask
    ``(B, 1, F)``; AWD-LSTM's locked dropout), which also draws ``T`` times fewer random numbers.
    """

    def __init__(self, p: float = 0.5, whole_vectors: bool = False, locked: bool = False):
        super().__init__()
        self.p, self.whole_vectors, self.locked = p, whole_vectors, locked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.whole_vectors:
            shape = (*x.shape[:-1], 1)
        elif self.locked and x.dim() > 2:
            shape = (x.shape[0], *[1] * (x.dim() - 2), x.shape[-1])
        else:
            shape = x.shape
        if x.device.type != "cpu":
            if shape == x.shape:
                return nn.functional.dropout(x, self.p, True)
            keep = torch.rand(shape, device=x.device) >= self.p
            return x * keep.to(x.dtype).mul_(1 / (1 - self.p))
        n = math.prod(shape)
        bits = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 3) // 4,), dtype=torch.int64).view(torch.int16)
        keep = bits[:n] >= round(self.p * 65536) - 32768
        return x * keep.view(shape).to(x.dtype).mul_(1 / (1 - self.p))

    def extra_repr(self) -> str:
        flags = [name for name in ("whole_vectors", "locked") if getattr(self, name)]
        return ", ".join([f"p={self.p}", *(f"{name}=True" for name in flags)])


class NgramEmbedding(nn.Module):
    """Embeddings of the hashed 2..``order``-grams of ids ending at each position, summed: ``(B, T, E)``.

    Beside a character's own embedding this gives the RNN the subword units (``"ov"``,
    ``"ova"``) that make a linear n-gram model strong on names; beside a word's, its
    phrases. Hashing (fastText's trick) keeps the table at ``buckets`` rows whatever the
    number of n-grams, and needs nothing but the ids, so exports carry it unchanged.
    Positions before a sequence's start read id 0 (padding).
    """

    PRIME = 1_000_003

    def __init__(self, order: int, buckets: int, dim: int):
        super().__init__()
        self.order, self.buckets = order, buckets
        self.table = nn.Embedding(buckets, dim)
        nn.init.normal_(self.table.weight, std=0.1)  # start small next to the N(0, 1) token embedding

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()
        total = None
        h = ids
        for n in range(2, self.order + 1):
            earlier = nn.functional.pad(ids, (n - 1, 0))[:, : ids.shape[1]]
            # Mixing in n keeps the same ids at different orders apart; the modulo after each
            # step keeps every product far inside int64.
            h = ((h * self.PRIME + earlier) * 31 + n) % self.buckets
            e = self.table(h)
            total = e if total is None else total + e
        return total

    def extra_repr(self) -> str:
        return f"order={self.order}, buckets={self.buckets}"


class SequenceClassifier(nn.Module):
    """Embedding -> RNN -> pooling -> two-layer head, returning logits ``(B, C)``.

    Args mirror :class:`rnnkit.Config`'s model section (``proj_size`` > 0: an LSTM with
    projections, whose outputs, and so the pooled features, are ``proj_size`` wide per direction). ``kernel`` picks how the torch
    backend's recurrent layer runs (:mod:`rnnkit.padded`): ``auto`` (the fused kernel to
    train a GRU/RNN on CPU, torch's kernels otherwise), ``fused``, ``native``, or ``packed`` (``pack_padded_sequence``,
    the textbook path, kept as the reference). The scratch backend always reads packed
    input. ``pooling``:
      * ``last``: the final hidden state of each sequence -- forward direction
        at its last valid step, backward direction at step 0 (from ``h_n``);
      * ``max`` / ``mean``: over valid positions of the top layer's outputs;
      * ``maxmean``: both, concatenated (``(B, 2*D*H)``);
      * ``attention``: a learned score per position, softmax over valid ones.

    ``char_branch`` > 0: each sequence is the text's tokens, ``<chars>`` (id ``char_separator``), then its
    characters (:class:`rnnkit.tokenizers.WithChars`). The encoder above reads the part before the last
    ``<chars>``; a one-layer BiLSTM of ``char_branch`` per direction, over its own embedding table of that
    width, reads the part after it, and its max and mean pooled outputs ``(B, 4*char_branch)`` join the
    pooled features. :meth:`embed` then gives both tables' vectors side by side at every position
    ``(B, T, E + char_branch)``, so explanations and adversarial moves see one input.
    """

    def __init__(self, vocab_size: int, num_classes: int, cell: str = "lstm", backend: str = "torch",
                 nonlinearity: str = "tanh", embedding_dim: int = 64, hidden_size: int = 128, proj_size: int = 0,
                 num_layers: int = 1, bidirectional: bool = True, rnn_dropout: float = 0.0,
                 embedding_dropout: float = 0.1, locked_dropout: bool = False, token_dropout: float = 0.0,
                 pooling: str = "max", head_hidden: int = 128, head_dropout: float = 0.3, padding_idx: int = 0,
                 kernel: str = "auto", ngram_order: int = 1,
                 ngram_buckets: int = 100_000, head: str = "softmax", multilabel: bool = False,
                 text_vector_dim: int = 0, char_branch: int = 0, char_separator: int = -1):
        super().__init__()
        if head == "binary" and (num_classes != 2 or multilabel):
            raise RnnkitError(f"head=binary needs exactly two classes (single-label); this data has {num_classes}"
                              f"{' labels (multi-label)' if multilabel else ''}: use head=softmax")
        self.head, self.multilabel = head, multilabel
        if pooling not in POOLINGS:
            raise RnnkitError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
        if kernel not in KERNELS:
            raise RnnkitError(f"kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")
        self.cell, self.pooling = cell, pooling
        self.kernel = "packed" if backend == "scratch" else kernel
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        self.ngrams = NgramEmbedding(ngram_order, ngram_buckets, embedding_dim) if ngram_order > 1 else None
        self.embedding_dropout = Dropout(embedding_dropout, locked=locked_dropout)
        self.token_dropout = Dropout(token_dropout, whole_vectors=True)
        self.rnn = make_rnn(cell, backend, embedding_dim, hidden_size, num_layers, bidirectional,
                            rnn_dropout, nonlinearity, proj_size)
        # None: torch's own mask between layers (F.dropout), as nn.LSTM draws it.
        self.between_layers = Dropout(rnn_dropout, locked=True) if locked_dropout and num_layers > 1 else None
        if self.between_layers is not None and rnn_dropout and self.kernel == "packed":
            raise RnnkitError(locked_between_packed_layers())
        out_size = rnn_output_width(self.rnn) * (2 if bidirectional else 1)
        if pooling == "attention":
            self.attention = nn.Linear(out_size, 1)
        self.text_vector_dim = text_vector_dim
        self.text_vectors = None
        """With ``text_vector_dim`` > 0: a callable ``(ids, lengths) -> (B, text_vector_dim)`` whose vectors the
        head reads beside the pooled features (:class:`rnnkit.pretrained.TextVectors`; set by whoever builds or
        loads the model, since it is not a weight)."""
        self.char_branch = char_branch
        features = out_size * (2 if pooling == "maxmean" else 1) + 4 * char_branch + text_vector_dim
        self.fc1 = nn.Linear(features, head_hidden)
        self.head_dropout = Dropout(head_dropout)
        self.fc2 = nn.Linear(head_hidden, 1 if head == "binary" else num_classes)
        # Fitted on val after training (rnnkit.calibration); saved with the weights so predict, serve
        # and export all give the calibrated probabilities. 1 while training.
        self.register_buffer("temperature", torch.ones(()))
        if char_branch:
            # Made last, so the modules above start from the same random draws with or without the branch.
            self.char_embedding = nn.Embedding(vocab_size, char_branch, padding_idx=padding_idx)
            self.char_rnn = make_rnn("lstm", "torch", char_branch, char_branch, bidirectional=True)
            # The vocabulary's id of <chars>: saved with the weights, so a loaded model splits as it trained.
            self.register_buffer("char_separator", torch.tensor(char_separator))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # Runs and checkpoints saved before calibration existed have no temperature: they are uncalibrated.
        state_dict.setdefault(prefix + "temperature", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def sequence_outputs(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The top layer's outputs ``(B, T, D*H)`` (forward half first); steps past a row's length are
        not defined (mask them with :func:`valid_mask`)."""
        return self._outputs(ids, lengths)[0]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """What the RNN reads for ``ids (B, T)``, before dropout: token (+ n-gram) embeddings ``(B, T, E)``
        (``(B, T, E + char_branch)`` with a character branch: each position's vector in both tables).

        Explanations (:mod:`rnnkit.explain`) attribute to these vectors and pass them back through
        ``forward(..., embedded=)``.
        """
        x = self.embed_words(ids)
        if self.char_branch:
            x = torch.cat([x, self.char_embedding(ids)], dim=-1)
        return x

    def embed_words(self, ids: torch.Tensor) -> torch.Tensor:
        """The token (+ n-gram) embeddings ``(B, T, E)``: :meth:`embed` without a character branch's vectors."""
        x = self.embedding(ids)
        if self.ngrams is not None:
            x = x + self.ngrams(ids)
        return x

    def _outputs(self, ids: torch.Tensor, lengths: torch.Tensor, embedded: torch.Tensor | None = None):
        x = self.embedding_dropout(self.token_dropout(self.embed(ids) if embedded is None else embedded))
        if self.kernel == "packed":
            return self._run_packed(x, lengths)
        return run_padded(self.rnn, x, lengths, self.kernel, self.between_layers), None

    def encode(self, ids: torch.Tensor, lengths: torch.Tensor, embedded: torch.Tensor | None = None,
               chars: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled sequence representation ``(B, D*H)`` for ``ids (B, T)``, ``lengths (B,)``
        (``(B, D*H + 4*char_branch)`` with a character branch; ``chars``, when given, stands for the branch's
        :meth:`char_features`, and ``embedded`` may then hold the word table's vectors only)."""
        if not self.char_branch:
            return self._encode_words(ids, lengths, embedded)
        x = self.embed(ids) if embedded is None else embedded
        width = self.embedding.embedding_dim
        word_len, start, char_len = self.split(ids, lengths)
        word_ids, word_x = ids, x[..., :width]
        if not tracing():
            # Only as many steps as the longest word part: the characters would double the word encoder's work.
            # An export keeps every step instead (a traced slice would fix its size), at equal results.
            steps = int(word_len.max())
            word_ids, word_x = ids[:, :steps], word_x[:, :steps]
        words = self._encode_words(word_ids, word_len, word_x)
        if chars is None:
            chars = self._encode_chars(x[..., width:], start, char_len)
        return torch.cat([words, chars], dim=1)

    def char_features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The character branch's pooled features ``(B, 4*char_branch)``, as :meth:`encode` joins them.

        Adversarial training moves the word table only, so its two passes over a batch can share one
        computation of these (``forward(..., chars=)``, with ``embedded=`` :meth:`embed_words`): the branch
        then runs forward and backward once per batch instead of twice."""
        _, start, char_len = self.split(ids, lengths)
        return self._encode_chars(self.char_embedding(ids), start, char_len)

    def bucket_lengths(self, ids: torch.Tensor, lengths: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """What to sort rows ``ids (n, L)`` by for length-bucketed batches ``(n,)``: ``lengths``, or with a
        character branch the word part plus :data:`CHAR_STEP_COST` times the characters.

        A batch pads each part to its own longest row, and a word step costs the most, so rows are grouped
        by roughly what they cost. On 20,000 NSMC reviews, sorting by the whole length left 20% of the word
        steps padding (8% by this key) and 1.24x the work that the rows hold (1.14x)."""
        if not self.char_branch:
            return lengths
        parts = [self.split(ids[i:i + chunk], lengths[i:i + chunk]) for i in range(0, len(lengths), chunk)]
        words = torch.cat([p[0] for p in parts]).cpu().float()
        chars = torch.cat([p[2] for p in parts]).cpu().float()
        return words + CHAR_STEP_COST * chars

    def _encode_words(self, ids: torch.Tensor, lengths: torch.Tensor, embedded: torch.Tensor | None) -> torch.Tensor:
        out, last = self._outputs(ids, lengths, embedded)
        if self.pooling == "last":
            return last if last is not None else last_state(out, lengths, self.rnn.bidirectional)
        if self.pooling in ("max", "mean", "maxmean"):
            return pool(out, lengths, self.pooling)
        mask = valid_mask(lengths, ids.shape[1], ids.device)
        scores = self.attention(out).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return torch.bmm(weights.unsqueeze(1), out).squeeze(1)

    def split(self, ids: torch.Tensor, lengths: torch.Tensor):
        """Where a character branch's input starts: the word part's lengths ``(B,)`` (at least 1), the
        characters' first position ``(B,)`` and their count ``(B,)`` (0 for a row without ``<chars>``)."""
        lengths = lengths.to(ids.device)
        steps = torch.arange(ids.shape[1], device=ids.device)
        # The last <chars>: the character part holds none, so a word token that reads the same cannot move it.
        last = torch.where(ids == self.char_separator, steps, -1).amax(1)
        found = last >= 0
        start = torch.where(found, last + 1, lengths)
        char_len = torch.where(found, lengths - start, torch.zeros_like(lengths))
        return torch.where(found, last, lengths).clamp_min(1), start, char_len

    def _encode_chars(self, x: torch.Tensor, start: torch.Tensor, char_len: torch.Tensor) -> torch.Tensor:
        """The branch's max and mean pooled BiLSTM outputs ``(B, 4*char_branch)`` over the character vectors
        ``x[b, start[b]:start[b] + char_len[b]]`` of ``x (B, T, char_branch)``; a row with no characters
        reads one zero vector."""
        steps = torch.arange(x.shape[1] if tracing() else max(int(char_len.max()), 1), device=x.device)
        index = (start.unsqueeze(1) + steps).clamp(max=x.shape[1] - 1)
        inside = (steps < char_len.unsqueeze(1)).unsqueeze(-1)
        chars = x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[2])) * inside
        n = char_len.clamp_min(1)
        kernel = "native" if self.kernel == "packed" else self.kernel  # equal results; the branch is always padded
        return pool(run_padded(self.char_rnn, self.embedding_dropout(chars), n, kernel), n, "maxmean")

    def _run_packed(self, x: torch.Tensor, lengths: torch.Tensor):
        """The textbook path: outputs ``(B, T, D*H)`` (zeros at padding) and ``h_n`` of the top layer."""
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, h_n = self.rnn(packed)
        out, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=x.shape[1])
        h_n = h_n[0] if isinstance(h_n, tuple) else h_n
        last = torch.cat([h_n[-2], h_n[-1]], dim=-1) if self.rnn.bidirectional else h_n[-1]
        return out, last

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, embedded: torch.Tensor | None = None,
                vectors: torch.Tensor | None = None, chars: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, num_classes)``; ``embedded (B, T, E)``, when given, replaces :meth:`embed` ``(ids)``;
        ``vectors (B, text_vector_dim)``, when given, replaces ``text_vectors(ids, lengths)`` (an export's input);
        ``chars (B, 4*char_branch)``, when given, replaces :meth:`char_features` (see there).

        The binary head computes one logit ``z`` (``nn.Linear(head_hidden, 1)``) and returns ``(0, z)``:
        a softmax over that pair is exactly ``(1 - sigmoid(z), sigmoid(z))``, so every consumer of
        two-class logits works unchanged, and :func:`loss_function` trains ``z`` with BCE.
        """
        h = self.encode(ids, lengths, embedded, chars)
        if self.text_vector_dim:
            if vectors is None:
                if self.text_vectors is None:
                    raise RnnkitError("this model's head reads text vectors: attach model.text_vectors "
                                      "(rnnkit.load and rnnkit.train do)")
                vectors = self.text_vectors(ids, lengths)
            h = torch.cat([h, vectors.to(device=h.device, dtype=h.dtype)], dim=1)
        logits = self.fc2(self.head_dropout(torch.relu(self.fc1(h))))
        if self.head == "binary":
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        return logits

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities from :meth:`forward`'s logits, divided by the fitted :attr:`temperature`:
        a sigmoid per label for multi-label, else softmax; in fp32 whatever autocast gave the logits in."""
        return probabilities(logits.float(), self.temperature, self.multilabel)

    @classmethod
    def from_config(cls, cfg, vocab_size: int, num_classes: int, multilabel: bool = False,
                    text_vectors=None, char_separator: int = -1) -> "SequenceClassifier":
        """The model ``cfg`` describes; ``text_vectors`` (:class:`rnnkit.pretrained.TextVectors`) when
        ``cfg.text_vectors`` is set; ``char_separator``: the vocabulary's id of ``<chars>`` when ``cfg.char_branch``
        is set (a loaded model takes it from its weights)."""
        model = cls(vocab_size, num_classes, kernel=cfg.kernel, multilabel=multilabel, char_separator=char_separator,
                    text_vector_dim=text_vectors.width if text_vectors is not None else 0,
                    **{k: getattr(cfg, k) for k in MODEL_KEYS})
        model.text_vectors = text_vectors
        return model


class BinaryLoss(nn.Module):
    """BCE on the binary head's logit ``z = logits[:, 1] - logits[:, 0]``, targets 0/1 (label smoothing as in CE)."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = y.float() * (1 - self.label_smoothing) + self.label_smoothing / 2
        return nn.functional.binary_cross_entropy_with_logits(logits[:, 1] - logits[:, 0], target)


class MultiLabelLoss(nn.Module):
    """Mean BCE over every (example, label) pair, targets multi-hot ``(B, C)``, smoothed toward 1/2."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = y * (1 - self.label_smoothing) + self.label_smoothing / 2
        return nn.functional.binary_cross_entropy_with_logits(logits, target)


class LogitAdjustedLoss(nn.CrossEntropyLoss):
    """Cross-entropy on ``logits + shift``, where ``shift = tau * log(class share in training)`` (Menon et al., 2021).

    The network is trained as if each class's prior were added to its score, so the scores it learns
    (and predicts with) leave the prior partly out: rare classes are predicted more often. ``tau = 1``
    aims at balanced accuracy; a small ``tau`` only leans against the majority classes."""

    def __init__(self, shift: torch.Tensor, label_smoothing: float = 0.0, weight: "torch.Tensor | None" = None):
        super().__init__(weight=weight, label_smoothing=label_smoothing)
        self.register_buffer("shift", shift)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return super().forward(logits + self.shift.to(logits.dtype), y)


def loss_function(head: str, multilabel: bool, label_smoothing: float = 0.0,
                  weight: "torch.Tensor | None" = None, shift: "torch.Tensor | None" = None) -> nn.Module:
    """The training loss for a head: cross-entropy (softmax), BCE on one logit (binary) or per label (multi-label).

    ``shift`` (softmax head only): added to the logits inside the loss, see :class:`LogitAdjustedLoss`."""
    if multilabel:
        return MultiLabelLoss(label_smoothing)
    if head == "binary":
        return BinaryLoss(label_smoothing)
    if shift is not None:
        return LogitAdjustedLoss(shift, label_smoothing, weight)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
