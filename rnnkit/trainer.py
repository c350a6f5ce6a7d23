"""Training: data -> vectorizer -> model -> epochs -> a finished run folder.

Read top to bottom, :func:`train` is the whole story. It checks everything
that can be checked before creating the run folder (so bad input leaves
nothing behind), writes a checkpoint after every epoch, and writes the final
artefacts with the manifest last.

Resuming replays exactly: each epoch's batch order depends only on
``(seed, epoch)`` and the checkpoint carries the optimizer, scheduler and RNG
states, so on CPU a resumed run ends with the same weights and metrics as one
that was never interrupted.

Under ``torchrun`` the same function runs in every process; what differs
(rank 0 prepares, decides and writes; each rank trains on a share of every
batch) is spelled out in :mod:`rnnkit.distributed`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from . import distributed
from . import run as runio
from .config import Config, char_branch_needs_words
from .data import Splits, load_config_splits, sha256_of
from .distributed import World
from .errors import RnnkitError
from .model import SequenceClassifier, loss_function, valid_mask
from .optim import RowAdam
from .padded import cpu_has_native_bf16
from .predict import Run, autocast, autocast_dtype, calibrated, precision_name, predict_logits
from .tokencache import tokenize_corpus
from .tokenizers import CHARS, VocabularyTooLarge, build_tokenizer
from .vectorizer import BatchSampler, EncodedSplit, Vectorizer


def _log_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_optimizer(cfg: Config, params, sparse: Optional[list] = None) -> torch.optim.Optimizer:
    """The optimizer of ``cfg`` in torch's fastest implementation for these parameters.

    ``fused`` (one kernel over all tensors; Adam, AdamW, SGD) where torch has it, else
    ``foreach`` (RMSprop). On the NSMC model an Adam step took 10.7 ms with the default
    per-tensor loop and 3.0 ms fused (BENCHMARKS.md, "CPU speed"). The implementations
    compute the same update up to float rounding.

    ``sparse``: parameters with row-sparse gradients (an embedding with ``sparse=True``),
    updated by :class:`rnnkit.optim.RowAdam`: Adam's result, touching only the rows a batch
    uses instead of all 24k rows of NSMC's embedding each step.
    """
    params = list(params)
    kind, kwargs = {
        "adam": (torch.optim.Adam, {}),
        "adamw": (torch.optim.AdamW, {}),
        "rmsprop": (torch.optim.RMSprop, {"momentum": cfg.momentum}),
        "sgd": (torch.optim.SGD, {"momentum": cfg.momentum}),
    }[cfg.optimizer]
    dense = fastest_optimizer(kind, params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)
    if not sparse:
        return dense
    decay = cfg.weight_decay if cfg.optimizer == "adamw" else 0.0
    lr = cfg.lr if cfg.embedding_lr is None else cfg.embedding_lr
    return CombinedOptimizer([dense, RowAdam(sparse, lr=lr, weight_decay=decay)])


def fastest_optimizer(kind: type, params: list, **kwargs) -> torch.optim.Optimizer:
    """``kind(params, **kwargs)`` fused where torch has it, else foreach, else its plain loop."""
    for impl in ({"fused": True}, {"foreach": True}):
        try:
            return kind(params, **kwargs, **impl)
        except (TypeError, RuntimeError, ValueError):
            continue  # this torch or these tensors (device, dtype) lack that implementation
    return kind(params, **kwargs)


# Pretrained vectors train slower than the rest: on the sentence dev file (seeds 0-2, benchmarks/sweep.py) mean
# val 0.8356 at 2e-4, 0.8311 at 5e-4, 0.8097 at the general lr 3e-3, 0.8153 kept as they start (BENCHMARKS.md).
PRETRAINED_EMBEDDING_LR = 2e-4

# Row-wise embedding updates pay per row a batch uses (scattered reads and writes); dense ones per row of the
# table. At NSMC's 24,102 rows whole steps measured the same either way, at 51,484 rows 1.23x faster row-wise.
ROW_UPDATES_FROM = 40_000


def row_updates(cfg: Config, model: SequenceClassifier, device: torch.device, world: World = World()) -> bool:
    """Whether the embedding trains with :class:`rnnkit.optim.RowAdam` (``cfg.sparse_embedding``, or auto)."""
    if cfg.embedding_lr == 0:  # a frozen table is not updated at all
        return False
    if cfg.sparse_embedding is not None:
        return cfg.sparse_embedding
    return (device.type == "cpu" and not world.enabled and cfg.ema is None
            and (cfg.optimizer == "adamw" or cfg.optimizer == "adam" and not cfg.weight_decay)
            # A pretrained table's 30k rows x 384: a dense step cost 4x a frozen one, most of it the table's update.
            and (model.embedding.num_embeddings >= ROW_UPDATES_FROM or cfg.embeddings is not None))


def model_optimizer(cfg: Config, model: SequenceClassifier, rows: Optional[bool] = None) -> torch.optim.Optimizer:
    """:func:`make_optimizer` over ``model``'s parameters; with ``rows`` (default: ``cfg.sparse_embedding``)
    the embedding gets row-sparse gradients and its own :class:`rnnkit.optim.RowAdam`, which brings
    the rows each forward pass looks up up to date first."""
    if cfg.embedding_lr == 0:
        model.embedding.weight.requires_grad_(False)
        return make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    if not (cfg.sparse_embedding if rows is None else rows):
        if cfg.embedding_lr is not None:
            rest = [p for name, p in model.named_parameters() if name != "embedding.weight"]
            return make_optimizer(cfg, [{"params": rest}, {"params": [model.embedding.weight], "lr": cfg.embedding_lr}])
        return make_optimizer(cfg, model.parameters())
    model.embedding.sparse = True
    dense = [p for name, p in model.named_parameters() if not name.startswith("embedding.")]
    optimizer = make_optimizer(cfg, dense, sparse=[model.embedding.weight])
    optimizer.optimizers[-1].attach(model.embedding)
    return optimizer


class CombinedOptimizer(torch.optim.Optimizer):
    """Several optimizers stepping as one, so schedulers and checkpoints see a single optimizer.

    ``param_groups`` are the members' own group dicts, so a scheduler's change of ``lr``
    reaches every member. ``state_dict()`` numbers parameters across members in order, in
    the layout of a single optimizer's state dict.
    """

    def __init__(self, optimizers: list):  # noqa: D107 -- no super().__init__: the members own the state
        self.optimizers = optimizers
        self.defaults = {}
        self._optimizer_step_pre_hooks, self._optimizer_step_post_hooks = {}, {}
        self._optimizer_state_dict_pre_hooks, self._optimizer_state_dict_post_hooks = {}, {}
        self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks = {}, {}

    @property
    def param_groups(self) -> list:
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for o in self.optimizers for p, s in o.state.items()}

    def step(self, closure=None):
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def flush(self) -> None:
        """Apply the updates members defer (:meth:`rnnkit.optim.RowAdam.flush`)."""
        for o in self.optimizers:
            if hasattr(o, "flush"):
                o.flush()

    def state_dict(self) -> dict:
        out: dict = {"state": {}, "param_groups": []}
        offset = 0
        for o in self.optimizers:
            sd = o.state_dict()
            out["state"].update({offset + pid: s for pid, s in sd["state"].items()})
            for group in sd["param_groups"]:
                out["param_groups"].append({**group, "params": [offset + pid for pid in group["params"]]})
            offset += sum(len(g["params"]) for g in sd["param_groups"])
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        groups = iter(state_dict["param_groups"])
        offset = 0
        for o in self.optimizers:
            mine = [next(groups) for _ in o.param_groups]
            n = sum(len(g["params"]) for g in mine)
            o.load_state_dict({
                "state": {pid - offset: s for pid, s in state_dict["state"].items() if offset <= pid < offset + n},
                "param_groups": [{**g, "params": [pid - offset for pid in g["params"]]} for g in mine],
            })
            offset += n

    def __repr__(self) -> str:
        return f"CombinedOptimizer({', '.join(type(o).__name__ for o in self.optimizers)})"


def clip_grad_norm(params: list, max_norm: float) -> torch.Tensor:
    """``nn.utils.clip_grad_norm_`` that also takes row-sparse gradients (a sparse embedding's).

    On CPU it skips the multiply when the norm is already within ``max_norm`` (torch multiplies
    every gradient by the clamped factor 1.0 anyway): the same result, without a pass over the
    NSMC model's 6.2M-value embedding gradient in the 96% of its steps that do not clip.
    """
    if not any(p.grad is not None and p.grad.is_sparse for p in params):
        total = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        # torch's own factor; reading it is free on CPU, a sync on a GPU.
        if total.device.type != "cpu" or not bool(max_norm / (total + 1e-6) >= 1.0):
            nn.utils.clip_grads_with_norm_(params, max_norm, total)
        return total
    for p in params:
        if p.grad is not None and p.grad.is_sparse:
            p.grad = p.grad.coalesce()  # repeated rows summed before the norm
    values = [p.grad._values() if p.grad.is_sparse else p.grad for p in params if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack([v.norm() for v in values]))
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for v in values:
        v.mul_(scale)
    return total


class WeightAverage:
    """An exponential moving average of a model's weights (Polyak averaging), updated after each step.

    The averaged copy is what gets validated, chosen and saved: it sits in a flatter region
    than the last step's weights and usually generalizes better on small data. The decay
    ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first steps so the random
    initial weights fade out quickly. One fused ``lerp`` over all tensors per step.
    """

    def __init__(self, model: nn.Module, decay: float, steps: int = 0):
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.decay, self.steps = decay, steps
        self._source = list(model.parameters())
        self._target = list(self.model.parameters())

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        torch._foreach_lerp_(self._target, self._source, 1.0 - decay)


def _default_out(cfg: Config, name: str) -> Path:
    stem = Path(name).stem if name not in ("", None) else "data"
    return Path("runs") / f"{stem}-{cfg.cell}-{time.strftime('%Y%m%d-%H%M%S')}"


def tokenizer_settings(cfg: Config) -> dict:
    """The tokenizer options of ``cfg`` that apply to its tokenizer."""
    settings = {"name": cfg.tokenizer, "lowercase": cfg.lowercase, "normalize": cfg.normalize,
                "squeeze_repeats": cfg.squeeze_repeats}
    if cfg.tokenizer in ("kiwi", "okt"):
        settings["pos_tags"] = cfg.pos_tags
    if cfg.tokenizer == "sentencepiece":
        settings["vocab_size"] = cfg.sp_vocab_size
    if cfg.tokenizer == "wordpiece":
        settings["encoder"] = cfg.embeddings
    if cfg.char_branch:
        settings["append_chars"] = True
    return settings


def char_separator(cfg: Config, vectorizer: Vectorizer) -> int:
    """The vocabulary's id of ``<chars>`` for a model with ``char_branch`` (-1 without)."""
    if not cfg.char_branch:
        return -1
    if CHARS not in vectorizer.vocab:
        raise RnnkitError(f"char_branch needs {CHARS} in the vocabulary, but max_vocab={cfg.max_vocab} left it out; "
                          "raise max_vocab")
    return vectorizer.vocab.index(CHARS)


def prepare(cfg: Config, splits: Optional[Splits] = None, vectorizer: Optional[Vectorizer] = None,
            log: Callable[[str], None] = _log_stderr, choices: Optional[dict] = None):
    """Load the data, fit (or reuse) the vectorizer and encode every split once.

    With ``tokenizer="auto"`` the tokenizer and ``max_len`` are decided here from the training
    texts; the settings chosen go into ``choices`` (config updates the caller applies and saves).
    """
    if vectorizer is None and cfg.text_vectors not in (None, "auto"):
        from .pretrained import encoder_folder

        encoder_folder(cfg.text_vectors, "text_vectors")  # a missing encoder fails before the data is read
    if splits is None:
        splits = load_config_splits(cfg)
    for note in splits.notes:
        log(f"data: {note}")
    if len(splits.val) == 0:
        raise RnnkitError(_no_val_message(cfg, splits))
    choices = {} if choices is None else choices
    if vectorizer is None and cfg.tokenizer == "auto":
        choices.update(_auto_tokenizer(cfg, splits.train.texts, log))
    auto = "extra" in choices  # decided from the texts, not taken from a named dataset's defaults
    auto_len = auto and cfg.max_len is None
    cfg = cfg.update(choices)
    if vectorizer is None and cfg.text_vectors is not None:
        choices.update(_text_vector_choice(cfg, log))
        cfg = cfg.update(choices)
    if vectorizer is None and cfg.embeddings is not None:
        from .pretrained import encoder_width

        width = encoder_width(cfg.embeddings)
        if cfg.embedding_dim != width:
            log(f"embeddings: {cfg.embeddings} vectors have {width} dimensions, so embedding_dim is {width}")
            choices["embedding_dim"] = width
        if cfg.embedding_lr is None:
            log(f"embeddings: the table trains at lr {PRETRAINED_EMBEDDING_LR:g}, so a few thousand texts do not "
                "pull the pretrained vectors apart; --set embedding_lr=... to change (0 keeps them)")
            choices["embedding_lr"] = PRETRAINED_EMBEDDING_LR
        cfg = cfg.update(choices)
    if vectorizer is None:
        from .data import DATASETS

        label_names = cfg.label_names
        if label_names is None and cfg.dataset in DATASETS:
            label_names = DATASETS[cfg.dataset].label_names
        elif label_names:
            seen = {l for y in splits.train.labels for l in (y if splits.multilabel else (y,))}
            unknown = sorted(set(label_names) - seen)
            if unknown:
                known = ", ".join(map(repr, sorted(seen)[:20]))
                raise RnnkitError(f"label_names names labels the training data does not have: "
                                  f"{', '.join(map(repr, unknown))}; its labels are {known}")
        try:
            tokenizer = build_tokenizer(tokenizer_settings(cfg), splits.train.texts)
        except VocabularyTooLarge as exc:
            if not auto:
                raise
            # tokenizer=auto guessed a vocabulary too large for a small corpus: take what it can fill.
            choices["sp_vocab_size"] = exc.most
            cfg = cfg.update(choices)
            log(f"auto: sentencepiece vocabulary lowered to {exc.most} pieces, all these texts can fill")
            tokenizer = build_tokenizer(tokenizer_settings(cfg), splits.train.texts)
    else:
        tokenizer = vectorizer.tokenizer
    tokens = {name: tokenize_corpus(tokenizer, splits[name].texts, cache=cfg.cache_tokens, progress=cfg.progress,
                                    desc=f"{tokenizer.name} {name}", log=log)
              for name in ("train", "val", "test") if len(splits[name])}
    if auto_len:
        choices["max_len"] = _auto_max_len(tokens["train"], log)
        choices["extra"]["auto"]["max_len"] = "99th percentile of training lengths"
        cfg = cfg.update(choices)
    if vectorizer is None:
        pieces = None
        if cfg.embeddings is not None:  # every piece the encoder knows, so words unseen in training keep a vector
            from .pretrained import vocabulary_pieces

            pieces = vocabulary_pieces(cfg.embeddings)
        vectorizer = Vectorizer.fit(splits.train.texts, splits.train.labels, tokenizer, cfg.min_freq,
                                    cfg.max_vocab, cfg.max_len, cfg.add_bos_eos, label_names, tokens=tokens["train"],
                                    vocab_tokens=pieces)
    encoded = {}
    for name, toks in tokens.items():
        ids, lengths, stats = vectorizer.encode_tokens(toks)
        encoded[name] = EncodedSplit(ids, lengths, vectorizer.encode_labels(splits[name].labels, f"the {name} split"))
        if stats["truncated"] or stats["empty"]:
            log(f"data: {name}: {stats['truncated']:,} documents cut to max_len={cfg.max_len}, "
                f"{stats['empty']:,} with no tokens")
    tr = encoded["train"]
    unk = vectorizer.unk_rate(encoded["val"].ids, encoded["val"].lengths)
    log(f"data: {splits.name or cfg.dataset}: train {len(splits.train)}, val {len(splits.val)}, "
        f"test {len(splits.test)}; {len(vectorizer.labels)} classes; vocabulary {len(vectorizer.vocab)} "
        f"({cfg.tokenizer}); <unk> in val {unk:.2%}; mean length {tr.lengths.float().mean():.1f}"
        f"{' (with <bos>/<eos>)' if vectorizer.add_bos_eos else ''}")
    if unk > 0.5 and (cfg.min_freq > 1 or cfg.max_vocab):
        raise RnnkitError(f"{unk:.0%} of the validation tokens are <unk> with min_freq={cfg.min_freq}"
                          f"{f', max_vocab={cfg.max_vocab}' if cfg.max_vocab else ''}: the vocabulary "
                          f"({len(vectorizer.vocab)} entries) is too small to learn from; lower --min-freq or max_vocab")
    return splits, vectorizer, encoded


def _no_val_message(cfg: Config, splits: Splits) -> str:
    """Why there is no validation split, and what to do about it (early stopping and checkpoint choice need one)."""
    n = len(splits.train)
    distinct = len(set(splits.train.labels))
    if cfg.val_fraction <= 0:
        return "no validation data: give a val split/file or set val_fraction above 0 (early stopping needs it)"
    message = f"no validation data from {n} example{'s' if n != 1 else ''}{' (repeats dropped)' if cfg.dedupe else ''}"
    if n >= 10 and distinct > n / 2:
        return (message + f" with {distinct} distinct labels: is the label column really the text? "
                "name the columns with --text-column and --label-column")
    return message + ": too few to hold out a validation split; give more data or a val split/file"


def _auto_tokenizer(cfg: Config, texts, log: Callable[[str], None]) -> dict:
    """Config updates for ``tokenizer="auto"``: a named dataset's tuned tokenizer (a Config naming the dataset
    directly gets what the CLI gives), else :func:`rnnkit.tokenizers.choose_tokenizer` with its reason in ``extra``."""
    from .config import DATASET_DEFAULTS
    from .tokenizers import choose_tokenizer

    named = DATASET_DEFAULTS.get(cfg.dataset, {}).get("tokenizer")
    if named and cfg.embeddings is not None:  # what validate() says when the CLI sets both
        raise RnnkitError(f"embeddings={cfg.embeddings!r} reads the encoder's own pieces, so it needs tokenizer "
                          f"wordpiece; the {cfg.dataset} dataset uses {named}: add tokenizer='wordpiece'")
    if named:
        char_branch_needs_words(cfg.char_branch, named, f"the {cfg.dataset} dataset's ")
        return {"tokenizer": named}
    from .pretrained import INSTALL_HINT, installed_encoders

    if cfg.embeddings is not None:
        picked, why = {"tokenizer": "wordpiece"}, f"wordpiece, the pieces of embeddings={cfg.embeddings}"
    else:
        encoders = installed_encoders()
        picked, why = choose_tokenizer(texts, cfg.sp_vocab_size, encoders)
        if picked["tokenizer"] == "sentencepiece" and not encoders:
            why += f"; for English, pretrained embeddings help on small data: {INSTALL_HINT}"
    char_branch_needs_words(cfg.char_branch, picked["tokenizer"], "tokenizer=auto's choice for this data, ")
    log(f"auto: tokenizer = {why}; --tokenizer to choose another")
    return {**picked, "extra": {**cfg.extra, "auto": {"tokenizer": why}}}


def _text_vector_choice(cfg: Config, log: Callable[[str], None]) -> dict:
    """``text_vectors="auto"`` made concrete: minilm for a character model where it is installed, else off."""
    from .config import text_vectors_need_char
    from .pretrained import INSTALL_HINT, installed_encoders

    if cfg.tokenizer != "char":
        if cfg.text_vectors == "auto":
            return {"text_vectors": None}
        raise text_vectors_need_char(cfg.text_vectors, cfg.tokenizer)
    if cfg.text_vectors != "auto":
        return {}
    if "minilm" in installed_encoders():
        return {"text_vectors": "minilm"}
    log(f"text vectors: off; pretrained piece vectors raised accuracy on surnames, names and words: {INSTALL_HINT}")
    return {"text_vectors": None}


def _vectors_hint(cfg: Config) -> str:
    """For a built-in character dataset trained without its text vectors because rnnkit[pretrained] is
    missing: the install that lifted each of them (BENCHMARKS.md, issue 13). Not for a user's own file,
    whose language the English encoder may not know."""
    from .config import DATASET_DEFAULTS
    from .pretrained import INSTALL_HINT, encoder_installed

    if (DATASET_DEFAULTS.get(cfg.dataset, {}).get("text_vectors") != "auto" or cfg.tokenizer != "char"
            or cfg.text_vectors is not None):
        return ""
    if encoder_installed("minilm"):
        return ""  # installed, so the user turned the vectors off
    return (f"{INSTALL_HINT} adds pretrained piece vectors (text_vectors=auto), which raised validation accuracy "
            "by 0.7-3.3 points on the built-in surnames, names and words")


def _auto_max_len(tokens, log: Callable[[str], None]) -> Optional[int]:
    """The 99th percentile of the training lengths, so the longest 1% of outliers do not set the batch width."""
    lengths = sorted(len(t) for t in tokens)
    if not lengths:
        return None
    p99 = max(1, lengths[min(len(lengths) - 1, int(0.99 * len(lengths)))])
    cut = sum(1 for n in lengths if n > p99)
    log(f"auto: max_len = {p99} tokens (99th percentile of training lengths; the longest is {lengths[-1]}, "
        f"{cut:,} texts are cut); --max-len to change")
    return p99


def evaluate_encoded(split: EncodedSplit, labels: list[str], probs: torch.Tensor,
                     loss_fn: Optional[nn.Module] = None, thresholds: Optional[torch.Tensor] = None) -> dict:
    """Loss (if ``loss_fn``) and the full classification report for one encoded split from its
    probabilities ``probs`` (:func:`rnnkit.predict.calibrated` of the logits the run predicted).

    Multi-label splits (2-D labels) get :func:`rnnkit.metrics.multilabel_report` at ``thresholds``
    (0.5 when None).
    """
    from .metrics import classification_report, multilabel_report

    if split.labels.ndim == 2:
        th = thresholds if thresholds is not None else torch.full((len(labels),), 0.5)
        report = multilabel_report(split.labels.numpy(), probs.numpy(), th.numpy(), labels)
        if loss_fn is not None:
            report["loss"] = float(nn.functional.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), split.labels))
        return report
    report = classification_report(split.labels.numpy(), probs.argmax(1).numpy(), labels)
    if loss_fn is not None:
        # NLL of the probabilities (not of label-smoothed targets) so val_loss is comparable across runs.
        report["loss"] = float(nn.functional.nll_loss(torch.log(probs.clamp_min(1e-12)), split.labels))
    return report


def count_correct(logits: torch.Tensor, y: torch.Tensor) -> int:
    """Right answers in a batch: the arg-max class, or for multi-label every label right at 0.5."""
    if y.ndim == 2:
        return int(((logits > 0) == (y > 0.5)).all(1).sum())
    return int((logits.argmax(1) == y).sum())


class SlantedTriangular:
    """ULMFiT's slanted triangular learning rate, as a factor of the peak for ``LambdaLR``.

    Rises linearly from 1/``ratio`` over the first ``warmup`` of ``total`` steps, then falls linearly
    back to 1/``ratio`` at the last step. Its state is three numbers, so a checkpoint stores it as JSON.
    """

    def __init__(self, total: int, warmup: float = 0.1, ratio: float = 32.0):
        self.total, self.warmup, self.ratio = max(total, 1), warmup, ratio

    def __call__(self, step: int) -> float:
        cut = max(1, int(self.total * self.warmup))
        p = step / cut if step < cut else 1 - (step - cut) / max(1, self.total - cut)
        return (1 + max(p, 0.0) * (self.ratio - 1)) / self.ratio


def rdrop_loss(logits: torch.Tensor, again: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module,
               weight: float) -> torch.Tensor:
    """R-Drop: the mean loss of two dropout draws ``(B, C)`` of the same batch, plus ``weight`` times
    the symmetric KL divergence between their class distributions."""
    p, q = torch.log_softmax(logits, -1), torch.log_softmax(again, -1)
    kl = nn.functional.kl_div(p, q, reduction="batchmean", log_target=True) + \
        nn.functional.kl_div(q, p, reduction="batchmean", log_target=True)
    return (loss_fn(logits, y) + loss_fn(again, y)) / 2 + weight * kl / 2


def adversarial_step(embedded: torch.Tensor, lengths: torch.Tensor, size: float,
                     features: Optional[int] = None) -> torch.Tensor:
    """The move ``(B, T, E)`` of adversarial training (Miyato et al., 2017) for ``embedded``, whose
    ``.grad`` holds the loss's gradient: along that gradient, with an L2 norm of ``size`` times the
    text's root-mean-square token embedding norm. Miyato's move has one norm for every text, whatever its
    length; measuring it in tokens keeps that and lets one ``size`` suit embeddings of any scale.
    Steps past a text's length get no gradient, so they do not move. A gradient that overflowed
    (fp16) gives no move; the loss scaler then skips the step anyway. ``features``: only the first this many
    values of each vector move and count (a model's word table, where its character branch's sits after it:
    the recipe measured; BENCHMARKS.md, issue 13)."""
    grad, vectors = embedded.grad.detach(), embedded.detach()
    if features is not None:
        grad, vectors = grad[..., :features], vectors[..., :features]
    grad, vectors = grad.float(), vectors.float()
    with torch.no_grad():
        lengths = lengths.to(grad.device)
        valid = valid_mask(lengths, grad.shape[1], grad.device).unsqueeze(-1)
        token = (vectors * valid).flatten(1).norm(dim=1) / lengths.clamp_min(1).sqrt()
        scale = size * token / grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        step = torch.nan_to_num(grad * scale.view(-1, *([1] * (grad.dim() - 1))), nan=0.0, posinf=0.0, neginf=0.0)
        return nn.functional.pad(step, (0, embedded.shape[-1] - step.shape[-1]))


FORECAST_BATCHES = 20
"""The epoch forecast times this many batches, or 5% of the epoch if more (at most 5 s), after two warm-up ones."""


def train_epoch(model: nn.Module, split: EncodedSplit, batches, optimizer: torch.optim.Optimizer,
                loss_fn: nn.Module, clip_grad: Optional[float], device: torch.device,
                world: World = World(), amp: Optional[torch.dtype] = None,
                scaler: Optional["torch.amp.GradScaler"] = None,
                average: Optional[WeightAverage] = None,
                estimate: Optional[Callable[[int, float], None]] = None,
                rdrop: float = 0.0, schedule=None, adversarial: float = 0.0) -> tuple[float, int, int]:
    """One pass over ``batches`` (tensors of row indices); returns (summed loss, correct, seen) of this rank.

    ``batches`` may be a tqdm bar around the sampler: it gets the running loss and accuracy.
    Under torchrun every rank gets the same global batches and trains on its share of each
    (:func:`rnnkit.distributed.shard`). ``amp`` is the autocast dtype (:func:`autocast_dtype`;
    ``None`` for fp32; fp16 needs ``scaler``). ``average`` is updated after every step.
    ``estimate(batches, seconds)`` is called once, after the first steady batches (the first two,
    which pay for kernel set-up, are not timed; then :data:`FORECAST_BATCHES` or 5% of the epoch), to
    forecast the epoch. ``rdrop`` > 0: R-Drop
    (:func:`rdrop_loss`). ``schedule``: a learning-rate scheduler stepped after every batch.
    ``adversarial`` > 0 (and no ``rdrop``): each batch trains on the mean loss of its clean and its
    adversarially moved embeddings (:func:`adversarial_step`), at about 1.5-1.7x the cost.
    """
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    pin = device.type == "cuda" and split.ids.device.type == "cpu"
    mixed = autocast(device, amp)
    params = list(model.parameters())
    inner = getattr(model, "module", model)  # DDP wraps the classifier; embed() is the classifier's
    features = inner.embedding.embedding_dim if getattr(inner, "char_branch", 0) else None
    # The move leaves a character branch's input alone, so both passes can share its features: one forward and one
    # backward of the branch per batch. Not under DDP, whose reducer expects every gradient from its own forward.
    share_chars = features is not None and inner is model
    # What the move is made on: the word vectors alone when the branch is shared, else both tables' (moving the words).
    embed, move_features = (inner.embed_words, None) if share_chars else (inner.embed, features)
    timed_from, done = None, 0
    timed = max(FORECAST_BATCHES, len(batches) // 20) if hasattr(batches, "__len__") else FORECAST_BATCHES
    for index in batches:
        index, weight = distributed.shard(index, world)
        if index is None:
            continue
        ids, lengths, y = split.batch(index)
        if pin:
            ids, y = ids.pin_memory(), y.pin_memory()
        ids, y = ids.to(device, non_blocking=True), y.to(device, non_blocking=True)
        embedded, share, chars, word_ids, move_lengths = None, weight, None, ids, lengths
        # Under DDP the clean pass's gradients stay local (no_sync) and sync once, with the moved pass's.
        moving = adversarial and not rdrop
        with model.no_sync() if moving and hasattr(model, "no_sync") else contextlib.nullcontext():
            with mixed:
                if rdrop:
                    # both dropout draws in one pass over a doubled batch
                    logits, again = model(torch.cat([ids, ids]), torch.cat([lengths, lengths])).float().chunk(2)
                    loss = rdrop_loss(logits, again, y, loss_fn, rdrop)
                elif moving:
                    if features is not None:
                        # The move is sized on the words it moves: each text's word part, not its characters.
                        move_lengths = inner.split(ids, lengths)[0]
                    if share_chars:
                        branch = inner.char_features(ids, lengths)
                        chars = branch.detach().requires_grad_(True)  # gathers both passes' gradients
                        word_ids = ids[:, :int(move_lengths.max())]  # both passes then read no column past the words
                    embedded = embed(word_ids)
                    if embedded.requires_grad:
                        embedded.retain_grad()
                    else:  # a frozen table (embedding_lr=0): the move still needs the gradient at the vectors
                        embedded.requires_grad_(True)
                    logits = model(ids, lengths, embedded=embedded, chars=chars)
                    loss = loss_fn(logits.float(), y)
                    share = weight * 0.5  # the mean of the clean and the moved loss
                else:
                    logits = model(ids, lengths)
                    loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            (scaler.scale(loss * share) if scaler is not None else loss * share).backward()
        if embedded is not None:
            with mixed:
                move = adversarial_step(embedded, move_lengths, adversarial, move_features)
                moved = model(ids, lengths, embedded=embed(word_ids) + move, chars=chars)
                moved_loss = loss_fn(moved.float(), y)
            (scaler.scale(moved_loss * share) if scaler is not None else moved_loss * share).backward()
            if chars is not None:
                branch.backward(chars.grad)
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        if clip_grad:
            clip_grad_norm(params, clip_grad)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if schedule is not None:
            schedule.step()
        if average is not None:
            average.update()
        total_loss += loss.item() * len(y)
        correct += count_correct(logits, y)
        seen += len(y)
        if hasattr(batches, "set_postfix"):
            batches.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
        if estimate is not None:
            done += 1
            if done == 2:
                timed_from = time.perf_counter()
            elif done > 2 and (done - 2 == timed or time.perf_counter() - timed_from > 5):
                estimate(done - 2, time.perf_counter() - timed_from)
                estimate = None
    if hasattr(optimizer, "flush"):
        optimizer.flush()  # every row as Adam has it, before anything evaluates or saves the model
    return total_loss, correct, seen


def train(config: Config | dict | None = None, *, data=None, resume: Optional[str] = None,
          splits: Optional[Splits] = None, log: Callable[[str], None] = _log_stderr, **overrides) -> Run:
    """Train a classifier and return the loaded :class:`Run`.

    >>> run = rnnkit.train(dataset="words", epochs=3)               # doctest: +SKIP
    >>> run.predict(["haus"])[0].label                              # doctest: +SKIP
    'German'
    >>> run = rnnkit.train(data=[("free entry, text WIN", "spam"), ("see you at 6", "ham"), ...])  # doctest: +SKIP
    >>> run = rnnkit.train(data=df, text_column="review", epochs=5)                # doctest: +SKIP

    Keywords (or a dict) start from the named dataset's tuned defaults, as ``rnnkit train --dataset``
    does (:meth:`Config.for_dataset`); a :class:`Config` object is used as it is.

    ``data``: a pandas DataFrame or a list of ``(text, label)`` pairs (a list of labels per
    text for multi-label), split into train/val/test by ``seed`` like a file.

    ``resume`` continues the unfinished run in that folder with its saved config.
    Started by ``torchrun --nproc-per-node N -m rnnkit train ...`` it trains with
    DistributedDataParallel (see :mod:`rnnkit.distributed`).
    """
    if resume is not None:
        run_dir = Path(resume)
        if (run_dir / runio.MANIFEST).exists():
            raise RnnkitError(f"{run_dir} already finished; nothing to resume")
        cfg = Config.from_saved(runio.read_json(run_dir / "config.json"), source=str(run_dir / "config.json"))
        cfg = cfg.update(overrides, source="overrides").validate() if overrides else cfg.validate()
    else:
        cfg = settings_for(config, overrides, own_data=data is not None)
        if data is not None:
            if splits is not None:
                raise RnnkitError("give data or splits, not both")
            from .data import PYTHON_DATA, splits_from_table, table_from_data

            table = table_from_data(data, cfg.text_column, cfg.label_column, cfg.label_sep, cfg.label_columns)
            splits = splits_from_table(table, cfg.val_fraction, cfg.test_fraction, cfg.seed, cfg.dedupe,
                                       name="in-memory")
            cfg = cfg.update({"dataset": PYTHON_DATA})
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    with distributed.context(cfg.device) as (world, device):
        if not world.main:
            log = _quiet
        where: dict = {}
        try:
            return _train(cfg, resume, splits, log, world, device, where)
        except KeyboardInterrupt:
            run_dir = where.get("run_dir")
            if run_dir is not None and (run_dir / runio.CHECKPOINT).exists():
                log(f"stopped: continue with rnnkit train --resume {run_dir}")
            elif run_dir is not None and run_dir.exists():
                log(f"stopped before the first epoch ended: nothing to resume; delete {run_dir} and start again")
            raise
        finally:
            if where.get("baseline") is not None:  # a fit still running beside a failed run
                where["baseline"].cancel()


def settings_for(config: Config | dict | None, overrides: dict, own_data: bool = False) -> Config:
    """The validated config of :func:`train`: a :class:`Config` object is taken as it is (it already holds
    every value); a dict or keywords start from their named dataset's tuned defaults, as ``rnnkit train
    --dataset D`` does, except for texts passed as ``data=`` (``own_data``), which are the user's own."""
    if isinstance(config, Config):
        return config.update(overrides, source="arguments").validate()
    settings = {**(config or {}), **overrides}
    base = Config() if own_data else Config.for_dataset(settings.get("dataset", Config.dataset))
    return base.update(settings, source="arguments").validate()


def _quiet(msg: str) -> None:
    pass


def _train(cfg: Config, resume: Optional[str], splits: Optional[Splits], log: Callable[[str], None],
           world: World, device: torch.device, where: Optional[dict] = None) -> Run:
    """The training run behind :func:`train`; ``where["run_dir"]`` is set as soon as the folder is known,
    ``where["baseline"]`` to the :class:`~rnnkit.baseline.BaselineJob` while one runs."""
    if cfg.amp != "off" and device.type != "cuda":
        raise RnnkitError(f"amp={cfg.amp} needs a CUDA device (this run uses {device}); "
                          "drop --set amp or train with --device cuda")
    if device.type == "cuda":
        # Lets cuDNN pick its fastest kernels for the shapes it sees; CPU runs stay bit-reproducible.
        torch.backends.cudnn.benchmark = True

    if world.enabled and cfg.batch_size < world.size:
        raise RnnkitError(f"batch_size {cfg.batch_size} is smaller than the {world.size} processes; "
                          f"use --batch-size {world.size} or more (it is the global batch)")
    mine: dict = {}  # what rank 0's setup keeps for itself

    def start_baseline() -> None:
        from .baseline import BaselineJob

        mine["baseline"] = BaselineJob(mine["splits"], mine["vectorizer"].labels.tokens,
                                       mine["vectorizer"].tokenizer.prepare, log)
        if where is not None:
            where["baseline"] = mine["baseline"]

    def setup() -> dict:
        """Rank 0: data, vectorizer and the run folder (everything that can fail on user input)."""
        # Before minutes of tokenizing, not after.
        if resume is not None:
            runio.checkpoint_folder(Path(resume))
        elif cfg.out:
            runio.check_out_folder(Path(cfg.out))
        vectorizer = None
        if resume is not None:
            vectorizer = Vectorizer.from_dict(runio.read_json(Path(resume) / "vectorizer.json"))
        choices: dict = {}
        mine["splits"], mine["vectorizer"], mine["data"] = prepare(cfg, splits, vectorizer, log, choices)
        run_dir = Path(resume) if resume is not None else (
            Path(cfg.out) if cfg.out else _default_out(cfg, mine["splits"].name or cfg.dataset))
        if resume is None and not cfg.out:  # a given --out was checked above
            runio.check_out_folder(run_dir)
        if cfg.baseline and resume is None:  # a resumed run has it in its checkpoint
            start_baseline()
        return {"vectorizer": mine["vectorizer"].to_dict() if world.enabled else None, "run_dir": str(run_dir),
                "choices": choices}

    shared = distributed.on_main(setup, world, device)
    run_dir = Path(shared["run_dir"])
    if where is not None:
        where["run_dir"] = run_dir
    cfg = cfg.update(shared["choices"])  # what tokenizer=auto decided, saved with the run
    if world.main:
        vectorizer, data = mine["vectorizer"], mine["data"]
    else:
        # The other ranks tokenize with rank 0's vectorizer; with the token cache on this is a read.
        _, vectorizer, data = prepare(cfg.update({"progress": False}), splits,
                                      Vectorizer.from_dict(shared["vectorizer"]), log)
    cfg = cfg.update({"out": str(run_dir)})
    labels = vectorizer.class_names
    if cfg.hybrid and vectorizer.multilabel:
        raise RnnkitError("hybrid works with single-label data (it mixes class distributions); drop --hybrid "
                          "for this multi-label file")

    text_vectors = None
    if cfg.text_vectors is not None:
        from .pretrained import TEXT_VECTOR_FILE, TextVectors

        if resume is not None:
            text_vectors = TextVectors.from_run(run_dir, vectorizer.vocab.tokens)
        else:
            text_vectors = TextVectors.build(cfg.text_vectors, vectorizer.vocab.tokens, log=log,
                                             scale=cfg.text_vector_scale)
            log(f"text vectors: each text's mean {cfg.text_vectors} piece vector ({text_vectors.width} values) goes "
                "to the head beside the RNN's features (--set text_vectors=none to leave it out)")
        # Filled here rather than by the first epoch's batches, which the epoch forecast times: on words that put
        # the forecast at 7.5 s per epoch against 5.0-5.6 s measured.
        fitted = [s for s in ("train", "val") if s in data]
        if sum(len(data[s]) for s in fitted) <= TextVectors.CACHE_SIZE:
            for s in fitted:
                text_vectors(data[s].ids, data[s].lengths)
    torch.manual_seed(cfg.seed)
    model = SequenceClassifier.from_config(cfg, len(vectorizer.vocab), len(vectorizer.labels),
                                           vectorizer.multilabel, text_vectors, char_separator(cfg, vectorizer)).to(device)
    if cfg.embeddings is not None and resume is None:
        from .pretrained import init_embedding

        filled = init_embedding(model.embedding.weight, vectorizer.vocab.tokens, cfg.embeddings, log)
        log(f"embeddings: {filled:,} of {len(vectorizer.vocab):,} rows start from {cfg.embeddings}'s vectors")
    if cfg.sparse_embedding and world.enabled:
        raise RnnkitError("sparse_embedding does not work with torchrun (DDP reduces dense gradients only); "
                          "drop --set sparse_embedding=true")
    rows = row_updates(cfg, model, device, world)
    if rows and cfg.sparse_embedding is None:
        log(f"embedding: {model.embedding.num_embeddings:,} rows, updated row-wise (the rows each batch uses; "
            "--set sparse_embedding=false for dense updates)")
    optimizer = model_optimizer(cfg, model, rows)
    sampler = BatchSampler(model.bucket_lengths(data["train"].ids, data["train"].lengths), cfg.batch_size,
                           shuffle=True, bucket=cfg.bucket, seed=cfg.seed)
    mode = "min" if cfg.monitor == "val_loss" else "max"
    scheduler = None
    if cfg.scheduler == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=cfg.lr_factor,
                                                               patience=cfg.lr_patience)
    elif cfg.scheduler == "epoch":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=cfg.lr_factor)
    elif cfg.scheduler == "linear":
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, SlantedTriangular(cfg.epochs * len(sampler)))
    weight = shift = None
    if cfg.class_weights or cfg.logit_adjustment:
        if vectorizer.multilabel or cfg.head == "binary":
            what, fix = (("class_weights", "drop --class-weights") if cfg.class_weights
                         else ("logit_adjustment", "set --set logit_adjustment=0"))
            raise RnnkitError(f"{what} works with the softmax head on single-label data; {fix}")
        counts = torch.bincount(data["train"].labels, minlength=len(labels)).float().clamp_min(1)
        if cfg.class_weights:
            weight = (counts.sum() / (len(counts) * counts)).to(device)
        if cfg.logit_adjustment:
            shift = (cfg.logit_adjustment * (counts / counts.sum()).log()).to(device)
    loss_fn = loss_function(cfg.head, vectorizer.multilabel, cfg.label_smoothing, weight, shift)
    if cfg.rdrop and cfg.adversarial:
        log(f"note: rdrop replaces adversarial training (adversarial={cfg.adversarial}); each doubles a step")
        cfg = cfg.update({"adversarial": 0.0})
    if cfg.rdrop and vectorizer.multilabel:
        raise RnnkitError("rdrop works with single-label data (it compares two class distributions); "
                          "drop --set rdrop for this multi-label file")
    scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
    amp = autocast_dtype(cfg, device)

    if cfg.rnn_dropout > 0 and cfg.num_layers == 1:
        # torch would warn deep inside nn.LSTM; say it once, in the user's terms.
        log(f"note: rnn_dropout={cfg.rnn_dropout} has no effect with num_layers=1 (it acts between stacked "
            "layers); use embedding_dropout/head_dropout, or num_layers >= 2")
    if amp is torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
        log("note: this CPU has no native bf16 (AVX512-BF16 or AMX), so bf16 is emulated and slow here; "
            "--precision auto (or fp32) trains in fp32")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {cfg.cell} ({cfg.backend}) {'bi' if cfg.bidirectional else 'uni'}directional x{cfg.num_layers}, "
        f"hidden {cfg.hidden_size}{f' (projected to {cfg.proj_size})' if cfg.proj_size else ''}, "
        f"pooling {cfg.pooling}"
        + (f", beside it a character BiLSTM of {cfg.char_branch} over each text's characters" if cfg.char_branch else "")
        + f", {n_params:,} parameters; device {device}"
        + (f", {str(amp).replace('torch.', '')} autocast" if amp is not None else ", fp32")
        + (f"; adversarial training on the embeddings, size {cfg.adversarial:g} (about 1.5-1.7x per step; "
           "--set adversarial=0 to turn it off)" if cfg.adversarial else "")
        + (f"; {world.size} processes ({'nccl' if device.type == 'cuda' else 'gloo'}), global batch "
           f"{cfg.batch_size} = {world.size} x ~{cfg.batch_size / world.size:g}" if world.enabled else ""))
    from . import padded

    if (cfg.backend == "torch" and cfg.kernel in ("auto", padded.SIDE_BY_SIDE_KERNEL.get(model.rnn.mode))
            and padded.directions_fit_side_by_side(model.rnn, device) and not padded.openmp_waits_briefly()):
        log(f"speed: the {cfg.cell.upper()}'s two directions run one after the other, since idle OpenMP threads "
            "spin long here (torch was loaded before rnnkit, or GOMP_SPINCOUNT is high); start Python with "
            "GOMP_SPINCOUNT=10000 to run them at once (1.2x per NSMC epoch for the LSTM)")

    pretrained = None
    if cfg.pretrain_epochs and resume is None:
        if world.enabled:
            raise RnnkitError("pretrain_epochs does not work under torchrun yet; pretrain in one process "
                              "or set --set pretrain_epochs=0")
        from .pretrain import pretrain

        pretrained = pretrain(model, data["train"], cfg.pretrain_epochs, cfg.batch_size, cfg.pretrain_lr or cfg.lr,
                              cfg.seed, device, amp, cfg.clip_grad, cfg.progress and world.main, log,
                              embedding_lr=cfg.embedding_lr)

    loop = {"epoch": 0, "history": [], "best_metric": None, "best_epoch": 0, "bad_epochs": 0, "seconds": 0.0}
    if pretrained is not None:
        loop["pretrain"] = pretrained

    def collect_baseline(wait: bool) -> None:
        """Rank 0: the baseline's result into ``loop`` (and so into checkpoints) once it is there."""
        job = mine.get("baseline")
        if job is not None and (wait or job.done()):
            del mine["baseline"]
            result = job.result()
            if result is not None:
                loop["baseline"] = result

    collect_baseline(wait=False)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    best_val_logits = None  # the best weights' validation logits, from this process: finish need not redo them
    average = WeightAverage(model, cfg.ema) if cfg.ema is not None else None
    if resume is not None:
        loop, best_state = runio.load_checkpoint(run_dir, model, optimizer, scheduler,
                                                 average.model if average else None)
        if average is not None:
            average.steps = loop.get("average_steps", 0)
        expected = loop.get("text_vectors_sha256")  # absent in checkpoints written before the check existed
        if text_vectors is not None and expected and expected != sha256_of(run_dir / TEXT_VECTOR_FILE):
            raise RnnkitError(f"{run_dir / TEXT_VECTOR_FILE} changed since the run started; restore it, or delete "
                              f"the run folder (rm -r {run_dir}) and train again")
        log(f"resume: {run_dir} from epoch {loop['epoch']} (best {cfg.monitor} {loop['best_metric']})")
        if world.main and cfg.baseline and "baseline" not in loop:  # stopped before its background fit ended
            start_baseline()
    elif world.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        runio.atomic_write_json(run_dir / "config.json", cfg.to_dict())
        runio.atomic_write_json(run_dir / "vectorizer.json", vectorizer.to_dict())
        if text_vectors is not None:
            text_vectors.save(run_dir / TEXT_VECTOR_FILE)
            # Checked on resume: the manifest that covers this file is written only when the run ends.
            loop["text_vectors_sha256"] = sha256_of(run_dir / TEXT_VECTOR_FILE)
    if world.main:
        # The history file mirrors the checkpoint: rewritten on resume, appended per epoch.
        runio.atomic_write_bytes(run_dir / "history.jsonl",
                                 "".join(json.dumps(r) + "\n" for r in loop["history"]).encode())

    train_data = data["train"].to(device)
    if device.type == "cuda" and train_data is data["train"]:
        log("data: the training split does not fit comfortably on the GPU; batches are copied from pinned memory")
    ddp_model = distributed.wrap(model, world, device)
    from tqdm.auto import tqdm

    def forecast(batches: int, seconds: float) -> None:
        # Scaled by padded tokens (rows x longest row), not by batches: bucketed batches range from a few
        # tokens to max_len, and NSMC's timed batches 3-22 of epoch 1 held 20% fewer than the mean batch.
        lengths = data["train"].lengths
        cells = [len(b) * int(lengths[b].max()) for b in sampler]  # this epoch's order, replayed
        per_epoch = seconds * sum(cells) / max(1, sum(cells[2:2 + batches]))
        left = cfg.epochs - loop["epoch"]
        stop_note = f", or fewer if early stopping ends it" if cfg.early_stopping is not None and left > 1 else ""
        log(f"time: about {_duration(per_epoch)} per epoch (from {batches} batches), up to "
            f"{_duration(per_epoch * left)} for {left} epoch{'s' * (left > 1)}{stop_note}; the bar shows the ETA")
        hints = faster_settings(cfg) if per_epoch * left > SLOW_RUN_SECONDS else []
        if hints:
            log(f"time: to go faster: {'; '.join(hints)}")

    stop = False
    first_epoch = loop["epoch"] + 1
    while loop["epoch"] < cfg.epochs and not stop:
        epoch = loop["epoch"] + 1
        sampler.set_epoch(epoch)
        distributed.seed_epoch(cfg.seed, epoch, world)
        started = time.perf_counter()
        bar = tqdm(sampler, total=len(sampler), desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                   disable=None if cfg.progress and world.main else True, unit="batch", file=sys.stderr)
        total_loss, correct, seen = distributed.all_sum(
            list(train_epoch(ddp_model, train_data, bar, optimizer, loss_fn, cfg.clip_grad, device, world,
                             amp, scaler, average, forecast if epoch == first_epoch and world.main else None,
                             cfg.rdrop, scheduler if cfg.scheduler == "linear" else None, cfg.adversarial)),
            world, device)
        bar.close()

        def evaluate() -> dict:
            """Rank 0: validate, and keep these weights if they are the best so far."""
            nonlocal best_state, best_val_logits
            if not math.isfinite(total_loss):
                raise RnnkitError(f"training diverged (loss is {total_loss}) in epoch {epoch}; "
                                  "lower --lr or set --clip-grad")
            scored = average.model if average is not None else model
            val_logits = predict_logits(scored, data["val"].ids, data["val"].lengths, cfg.batch_size * 4, device, amp)
            val = evaluate_encoded(data["val"], labels, calibrated(scored, val_logits), loss_fn)
            row = {"epoch": epoch, "train_loss": total_loss / seen, "train_accuracy": correct / seen,
                   "val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"],
                   "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - started}
            metric = row[cfg.monitor]
            improved = loop["best_metric"] is None or (metric < loop["best_metric"] if mode == "min"
                                                       else metric > loop["best_metric"])
            if improved:
                best_state = {k: v.detach().clone() for k, v in scored.state_dict().items()}
                best_val_logits = val_logits
            return {"row": row, "improved": improved}

        decision = distributed.on_main(evaluate, world, device)
        row, improved = decision["row"], decision["improved"]
        metric = row[cfg.monitor]
        if improved:
            loop.update(best_metric=metric, best_epoch=epoch, bad_epochs=0)
        else:
            loop["bad_epochs"] += 1
        if cfg.scheduler == "plateau":
            scheduler.step(metric)
        elif cfg.scheduler == "epoch":
            scheduler.step()
        loop["history"].append(row)
        loop["epoch"] = epoch
        loop["seconds"] += row["seconds"]
        stop = cfg.early_stopping is not None and loop["bad_epochs"] >= cfg.early_stopping
        loop["stopped_early"] = stop
        if average is not None:
            loop["average_steps"] = average.steps
        if world.main:
            collect_baseline(wait=False)
            runio.save_checkpoint(run_dir, model, best_state, optimizer, scheduler, loop,
                                  average.model if average else None)
            with open(run_dir / "history.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        log(f"epoch {epoch:3d}  train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f}  "
            f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f} f1 {row['val_macro_f1']:.4f}  "
            f"lr {row['lr']:.2g}  {row['seconds']:.1f}s{'  *' if improved else ''}")
    if stop:
        log(f"early stop: no {cfg.monitor} gain for {cfg.early_stopping} epochs; best epoch {loop['best_epoch']}")

    distributed.on_main(lambda: finish(run_dir, cfg, model, best_state, vectorizer, data, loop, device, log,
                                       lambda: collect_baseline(wait=True), best_val_logits, mine.get("splits")),
                        world, device)
    return Run.load(run_dir)


def finish(run_dir: Path, cfg: Config, model: nn.Module, best_state: dict, vectorizer: Vectorizer,
           data: dict, loop: dict, device: torch.device, log: Callable[[str], None],
           collect_baseline: Callable[[], None] = lambda: None, val_logits: Optional[torch.Tensor] = None,
           splits: Optional[Splits] = None) -> None:
    """Evaluate the best weights and write the final artefacts, manifest last. ``collect_baseline`` puts a
    baseline still fitting beside training into ``loop``, waiting for it: called after the evaluation,
    which it can share the cores with. ``val_logits``: the validation logits of ``best_state``, when the
    epoch that kept it computed them (the same weights, batches and arithmetic give the same numbers).
    ``splits``: the run's texts, which ``cfg.hybrid`` needs to fit its linear model (:mod:`rnnkit.hybrid`)."""
    from .baseline import behind_note, compare_line
    from .calibration import (calibration_report, fit_temperature, plot_reliability, probabilities, reliability,
                              risk_coverage)
    from .metrics import plot_confusion_matrix, plot_history

    model.load_state_dict(best_state)
    labels = vectorizer.class_names
    amp = autocast_dtype(cfg, device)  # what the run will predict in (rnnkit.predict.Run)
    metrics = {"best_epoch": loop["best_epoch"], "epochs_run": loop["epoch"], "train_seconds": loop["seconds"],
               "precision": precision_name(amp)}
    if loop.get("pretrain"):
        metrics["pretrain"] = loop["pretrain"]
    logits = {name: val_logits if name == "val" and val_logits is not None else
              predict_logits(model, data[name].ids, data[name].lengths, cfg.batch_size * 4, device, amp)
              for name in ("val", "test") if name in data}
    # Temperature scaling on val: the same arg-max, probabilities that mean what they say.
    temperature = fit_temperature(logits["val"], data["val"].labels) if "val" in logits else 1.0
    model.temperature.fill_(temperature)
    probs = {name: calibrated(model, z) for name, z in logits.items()}
    thresholds = None
    if vectorizer.multilabel:
        from .metrics import tune_thresholds

        # One threshold per label, chosen on val (calibrated); test is scored at those thresholds.
        vectorizer.thresholds = tune_thresholds(data["val"].labels.numpy(), probs["val"].numpy())
        thresholds = vectorizer.label_thresholds()
        runio.atomic_write_json(run_dir / "vectorizer.json", vectorizer.to_dict())
        log("thresholds (tuned on val): " + ", ".join(f"{l} {t:.2f}" for l, t in zip(labels, vectorizer.thresholds)))
    for name in logits:
        y = data[name].labels
        metrics[name] = evaluate_encoded(data[name], labels, probs[name], thresholds=thresholds)
        metrics[name]["calibration"] = calibration_report(logits[name], y, temperature)
        if not vectorizer.multilabel:
            metrics[name]["risk_coverage"] = risk_coverage(probs[name], y)
    shown = "test" if "test" in logits else "val"
    how = "fitted on val" if temperature != 1.0 else "1: val has no errors to fit it on, probabilities as trained"
    log(f"calibration: temperature {temperature:.3f} ({how}); {shown} ECE "
        f"{metrics[shown]['calibration']['ece_before']:.4f} -> {metrics[shown]['calibration']['ece_after']:.4f}")
    collect_baseline()
    baseline = loop.get("baseline")
    if baseline is not None:
        metrics["baseline"] = baseline
    files = ["config.json", "vectorizer.json", "model.safetensors", "metrics.json", "history.jsonl"]
    if cfg.text_vectors is not None:
        from .pretrained import TEXT_VECTOR_FILE

        files.append(TEXT_VECTOR_FILE)
    if cfg.hybrid and baseline is None:
        log("hybrid: skipped, since the baseline it mixes in did not come; the run is the RNN alone")
    elif cfg.hybrid:
        from .hybrid import build

        prepare_text = vectorizer.tokenizer.prepare
        texts = {s: [prepare_text(t) for t in splits[s].texts] for s in ("train", *probs)}
        try:
            hybrid, entry = build(texts, {s: data[s].labels.numpy() for s in texts}, probs, len(labels), baseline,
                                  labels)
        except Exception as exc:  # noqa: BLE001 - as with the baseline: the trained RNN is not lost over it
            log(f"hybrid: failed ({type(exc).__name__}: {exc}); the run is the RNN alone")
        else:
            metrics["hybrid"] = entry
            if entry["saved"]:
                files += hybrid.save(run_dir)
    runio.save_tensors(run_dir / "model.safetensors", model.state_dict(), {"format": "rnnkit"})
    runio.atomic_write_json(run_dir / "metrics.json", metrics)
    try:
        if "confusion_matrix" in metrics[shown]:  # multi-label runs have per-label scores instead
            plot_confusion_matrix(metrics[shown]["confusion_matrix"], labels, run_dir / "confusion_matrix.png",
                                  title=f"{shown} confusion matrix")
            files.append("confusion_matrix.png")
        plot_history(loop["history"], run_dir / "history.png")
        files.append("history.png")
        y = data[shown].labels
        plot_reliability(reliability(probabilities(logits[shown], 1.0, y.ndim == 2), y), reliability(probs[shown], y),
                         temperature, run_dir / "reliability.png", title=f"{shown} reliability ({len(y)} texts)")
        files.append("reliability.png")
    except ImportError:
        log("plots skipped: matplotlib is not installed")
    runio.write_manifest(run_dir, files, {"rnnkit_version": _version(), "torch_version": torch.__version__})
    runio.remove_checkpoint(run_dir)
    for name in ("val", "test"):
        if name in metrics:
            log(compare_line(name, metrics, baseline))
    if "hybrid" in metrics:
        from .hybrid import summary_line

        log(summary_line(metrics["hybrid"], metrics))
    note = behind_note(metrics, baseline)
    if note:
        log(note)
        hint = _vectors_hint(cfg)
        if hint:
            log(f"tip: {hint}")
    log(f"run saved to {run_dir}")


SLOW_RUN_SECONDS = 15 * 60
"""A forecast over this long gets a line naming the settings that cut the time (:func:`faster_settings`)."""


def faster_settings(cfg: Config) -> list[str]:
    """The settings of ``cfg`` that cost the most time per step, each with how to turn it off."""
    hints = []
    if cfg.char_branch:
        hints.append("--set char_branch=0 (the character branch costs 1.2-1.6x per step)")
    if cfg.dataset == "nsmc" and cfg.num_layers > 1:
        hints.append("--config nsmc-fast (one layer, no adversarial training, 3 epochs)")
    else:
        if cfg.adversarial:
            hints.append("--set adversarial=0 (each step runs the batch twice with it)")
        if cfg.num_layers > 1:
            hints.append(f"--num-layers 1 (each layer runs the whole sequence; now {cfg.num_layers})")
    if cfg.rdrop:
        hints.append("--set rdrop=0 (each step runs the batch twice with it)")
    return hints


def _duration(seconds: float) -> str:
    """``1.4 s``, ``27 s``, ``3 min``, ``1.6 h``: under 10 s whole seconds would round 1.4 to 1."""
    if round(seconds, 1) < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _version() -> str:
    from . import __version__

    return __version__
