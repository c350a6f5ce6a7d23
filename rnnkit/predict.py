"""Using a finished run: load it (safely), predict, evaluate.

>>> run = rnnkit.load("runs/surnames")               # doctest: +SKIP
>>> run.predict(["Nakamura"], top_k=2)[0]             # doctest: +SKIP
Prediction(label='Japanese', probability=0.97, top=[('Japanese', 0.97), ('Chinese', 0.01)])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import run as runio
from .config import PRECISIONS, Config
from .errors import RnnkitError
from .model import SequenceClassifier
from .padded import cpu_has_native_bf16
from .vectorizer import BatchSampler, Vectorizer


@dataclass
class Prediction:
    label: str
    probability: float
    top: list[tuple[str, float]] = field(default_factory=list)
    """The ``top_k`` labels with their probabilities, best first."""
    labels: Optional[list[tuple[str, float]]] = None
    """Multi-label models only: every label whose probability reaches its threshold, best first
    (possibly none); ``label`` is then the most likely label, whether or not it passed."""

    def to_dict(self) -> dict:
        out = {"label": self.label, "probability": self.probability,
               "top": [{"label": l, "probability": p} for l, p in self.top]}
        if self.labels is not None:
            out["labels"] = [{"label": l, "probability": p} for l, p in self.labels]
        return out


UNCERTAIN = "uncertain"
"""The label given to a text whose top probability is below ``abstain_below``."""


def check_abstain(abstain_below: Optional[float], labels: Sequence[str] = (), multilabel: bool = False) -> None:
    """A one-line error unless ``abstain_below`` is None or a probability that makes sense for this run."""
    if abstain_below is None:
        return
    if not (isinstance(abstain_below, (int, float)) and not isinstance(abstain_below, bool) and 0 < abstain_below <= 1):
        raise RnnkitError(f"abstain_below must be a probability in (0, 1], e.g. 0.8; got {abstain_below!r}")
    if multilabel:
        raise RnnkitError("abstain_below is for single-label runs: a multi-label run already answers only the labels "
                          "that reach their own thresholds; leave it out")
    if UNCERTAIN in labels:
        raise RnnkitError(f"this run has a class named {UNCERTAIN!r}, so abstaining would be ambiguous; "
                          "leave abstain_below out")


def autocast_dtype(cfg: Config, device: torch.device) -> Optional[torch.dtype]:
    """The dtype training's autocast computes in, or None for plain fp32. A run predicts in the same one.

    On CUDA ``cfg.amp`` decides. On CPU ``cfg.precision``: ``auto`` means bf16 where the CPU
    has native bf16 arithmetic (AVX512-BF16 or AMX), where it measured faster at equal
    accuracy (BENCHMARKS.md, "CPU speed"); fp32 elsewhere, where bf16 would be emulated and slow.
    """
    if device.type == "cuda":
        return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]
    if cfg.precision == "bf16" or (cfg.precision == "auto" and cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def precision_name(amp: Optional[torch.dtype]) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"`` for an autocast dtype (None: fp32), as ``metrics.json`` records it."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]


def inference_dtype(cfg: Config, device: torch.device, precision: Optional[str] = None,
                    trained: Optional[str] = None) -> Optional[torch.dtype]:
    """The autocast dtype a run predicts in on ``device``, or None for fp32.

    ``precision`` None: as the run trained, so the validation and test scores the run reported,
    ``predict``, ``evaluate`` and ``serve`` all see the same numbers (``explain`` computes in fp32,
    see :mod:`rnnkit.explain`). ``trained`` is what training recorded (``metrics["precision"]``:
    fp32, bf16 or fp16); runs from before that record resolve their config on this machine. bf16
    stays bf16 on a GPU or a CPU with native bf16 and becomes fp32 on a CPU that would emulate it
    (slowly); fp16 needs a GPU. bf16 predicted NSMC's validation split 1.6x faster than fp32, whose
    GEMMs were already near the CPU's fp32 peak. ``"fp32"`` or ``"bf16"`` force one; ``"auto"`` picks
    bf16 where the CPU computes it natively.
    """
    if precision is None:
        if trained is None:
            return autocast_dtype(cfg, device)
        if trained == "bf16" and (device.type == "cuda" or cpu_has_native_bf16()):
            return torch.bfloat16
        return torch.float16 if trained == "fp16" and device.type == "cuda" else None
    if precision not in PRECISIONS:
        raise RnnkitError(f"precision must be one of {', '.join(PRECISIONS)} (or left out: as the run trained); "
                          f"got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    return torch.bfloat16 if precision == "bf16" else None


def autocast(device: torch.device | str, amp: Optional[torch.dtype]):
    """``torch.autocast`` in ``amp`` on ``device``'s kind, or a context that changes nothing for None."""
    return torch.autocast(torch.device(device).type, dtype=amp or torch.float32, enabled=amp is not None)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int = 256,
                   device: torch.device | str = "cpu", amp: Optional[torch.dtype] = None) -> torch.Tensor:
    """Logits ``(n, C)`` float32 in input order, batching by length for speed; under autocast in ``amp``
    (:func:`inference_dtype`; None: fp32)."""
    was_training = model.training
    model.eval()
    out = None
    key = model.bucket_lengths(ids, lengths) if hasattr(model, "bucket_lengths") else lengths
    sampler = BatchSampler(key, batch_size, shuffle=False, bucket=True)
    with autocast(device, amp):
        for index in sampler:
            l = lengths[index]
            x = ids[index, : int(l.max())].long().to(device, non_blocking=True)
            z = model(x, l).float().cpu()
            if out is None:
                out = torch.empty(len(lengths), z.shape[1])
            out[index] = z
    model.train(was_training)
    return out


@torch.no_grad()
def predict_proba(model: torch.nn.Module, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int = 256,
                  device: torch.device | str = "cpu", amp: Optional[torch.dtype] = None) -> torch.Tensor:
    """Class probabilities ``(n, C)`` in input order, batching by length for speed.

    ``model`` is a :class:`SequenceClassifier`: its ``probabilities`` gives a softmax, or a sigmoid
    per label, of the logits divided by its fitted temperature (calibrated probabilities).
    """
    return calibrated(model, predict_logits(model, ids, lengths, batch_size, device, amp))


def calibrated(model: torch.nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """``model.probabilities`` of :func:`predict_logits`' CPU logits, computed where the model's
    temperature lives and handed back on the CPU."""
    return model.probabilities(logits.to(model.temperature.device)).cpu()


CACHED_FROM = 2000
"""``Run.evaluate`` takes its tokens through the token cache (:mod:`rnnkit.tokencache`) from this many texts."""


class Run:
    """A trained model with its vectorizer and metrics, loaded from a run folder."""

    def __init__(self, path: Path, config: Config, vectorizer: Vectorizer, model: SequenceClassifier,
                 metrics: dict, manifest: dict, precision: Optional[str] = None, hybrid=None):
        self.path = Path(path)
        self.config = config
        self.vectorizer = vectorizer
        self.model = model.eval()
        self.metrics = metrics
        self.manifest = manifest
        self.device = next(model.parameters()).device
        self.amp = inference_dtype(config, self.device, precision, metrics.get("precision"))
        """The autocast dtype every prediction runs in (None: fp32): by default the one the run trained in."""
        self.hybrid = hybrid
        """The RNN mixed with the linear baseline (:class:`rnnkit.hybrid.Hybrid`) for a run trained with
        ``--hybrid``, else None. ``predict_proba``, ``predict`` and ``evaluate`` use the mix; set it to
        None for the RNN alone."""

    @classmethod
    def load(cls, path, device: str = "cpu", precision: Optional[str] = None) -> "Run":
        """Load and verify a finished run folder. Nothing is unpickled.

        ``precision``: the arithmetic of its predictions, by default the one it trained in, where the
        numbers it reported were computed that way too (:func:`inference_dtype`); ``"fp32"`` gives what
        an exported ONNX model computes.
        """
        path = Path(path)
        manifest = runio.verify_run(path)
        config = Config.from_saved(runio.read_json(path / "config.json"), source=str(path / "config.json"))
        vectorizer = Vectorizer.from_dict(runio.read_json(path / "vectorizer.json"))
        text_vectors = None
        if config.text_vectors is not None:
            from .pretrained import TEXT_VECTOR_FILE, TextVectors

            if TEXT_VECTOR_FILE not in manifest.get("files", {}):
                raise RnnkitError(f"{path}: {runio.MANIFEST} does not list {TEXT_VECTOR_FILE}, which its config "
                                  "needs (edited or damaged); restore it or re-train")
            text_vectors = TextVectors.from_run(path, vectorizer.vocab.tokens)
        model = SequenceClassifier.from_config(config, len(vectorizer.vocab), len(vectorizer.labels),
                                               vectorizer.multilabel, text_vectors)
        state = runio.load_tensors(path / "model.safetensors")
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise RnnkitError(f"{path}: weights do not fit the saved config ({str(exc).splitlines()[0]})") from None
        metrics = runio.read_json(path / "metrics.json")
        from .hybrid import FILES as HYBRID_FILES, Hybrid

        hybrid = None
        listed = [name for name in HYBRID_FILES if name in manifest.get("files", {})]
        if ((metrics.get("hybrid") or {}).get("saved") or listed) and len(listed) < len(HYBRID_FILES):
            raise RnnkitError(f"{path}: {runio.MANIFEST} does not list both {' and '.join(HYBRID_FILES)} "
                              "(edited or damaged); restore it or re-train")
        if listed:
            hybrid = Hybrid.load(path, n_classes=len(vectorizer.labels))
        return cls(path, config, vectorizer, model.to(device), metrics, manifest, precision, hybrid)

    @property
    def labels(self) -> list[str]:
        return self.vectorizer.class_names

    def _check_texts(self, texts, verb: str = "predict") -> list[str]:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise RnnkitError(f"no texts given to {verb}")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise RnnkitError(f"text #{i + 1} is empty or not a string ({t!r}); give non-empty text")
        return texts

    @property
    def multilabel(self) -> bool:
        """True for a multi-label model: a sigmoid per label, each with its own threshold."""
        return self.vectorizer.multilabel

    def predict_proba(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Probabilities ``(len(texts), num_classes)``, columns in the order of :attr:`labels`
        (multi-label: each label's own probability; rows need not sum to 1)."""
        texts = self._check_texts(texts)
        ids, lengths = self.vectorizer.encode_texts(texts)
        return self._mixed(predict_proba(self.model, ids, lengths, batch_size, self.device, self.amp), texts)

    def _mixed(self, probs: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """The hybrid's probabilities where the run has one, else the RNN's ``probs`` (``serve`` calls it too)."""
        if self.hybrid is None:
            return probs
        prepare = self.vectorizer.tokenizer.prepare
        return self.hybrid.mix(probs, [prepare(t) for t in texts])

    def predict(self, texts: Sequence[str] | str, top_k: int = 3, batch_size: int = 256,
                abstain_below: Optional[float] = None) -> list[Prediction]:
        """The most likely label of each text, with its ``top_k`` alternatives.

        ``abstain_below``: a text whose top probability is below it is labelled ``"uncertain"``
        (its probabilities are still given). The probabilities are calibrated on val (temperature
        scaling), so 0.9 means right about 9 times in 10 on data like the validation split.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise RnnkitError(f"top_k must be a positive integer; got {top_k!r}")
        check_abstain(abstain_below, self.labels, self.multilabel)
        probs = self.predict_proba(texts, batch_size)
        return self.predictions(probs, top_k, abstain_below)

    def predictions(self, probs: torch.Tensor, top_k: int = 1,
                    abstain_below: Optional[float] = None) -> list[Prediction]:
        """:class:`Prediction` objects from probabilities ``(n, C)`` (what ``predict`` and ``serve`` return)."""
        k = min(top_k, probs.shape[1])
        values, indices = probs.topk(k, dim=1)
        labels = self.labels
        thresholds = self.vectorizer.label_thresholds().tolist() if self.multilabel else None
        out = []
        for row, v_row, i_row in zip(probs.tolist(), values.tolist(), indices.tolist()):
            top = [(labels[i], round(v, 6)) for v, i in zip(v_row, i_row)]
            chosen = None
            if thresholds is not None:
                chosen = sorted(((labels[i], round(p, 6)) for i, p in enumerate(row) if p >= thresholds[i]),
                                key=lambda lp: -lp[1])
            label = UNCERTAIN if abstain_below is not None and top[0][1] < abstain_below else top[0][0]
            out.append(Prediction(label, top[0][1], top, chosen))
        return out

    def explain(self, texts: Sequence[str] | str, method: str = "ig", target: Optional[str] = None,
                steps: Optional[int] = None, tolerance: Optional[float] = None) -> list:
        """Per text, one attribution score per token for the predicted class (or ``target``):
        Integrated Gradients (``method="ig"``, ``steps`` points on the path to start from, default 16,
        refined where the scores miss completeness by more than ``tolerance``, default 0.02) or
        occlusion. See :mod:`rnnkit.explain`."""
        from .explain import DEFAULT_STEPS, TOLERANCE, explain_texts

        return explain_texts(self, texts, method, target, DEFAULT_STEPS if steps is None else steps,
                             TOLERANCE if tolerance is None else tolerance)

    def evaluate(self, texts: Sequence[str], labels: Sequence, source: str = "data",
                 cache_tokens: Optional[bool] = None) -> dict:
        """Accuracy, macro-F1, per-class scores and confusion matrix on labelled texts, with the
        calibration error (``ece``) and a ``risk_coverage`` table: the share of texts answered and
        their accuracy when abstaining below each probability threshold.

        From :data:`CACHED_FROM` texts the tokens go through the token cache (:mod:`rnnkit.tokencache`):
        read when the run's training left them there, written otherwise. ``cache_tokens`` False
        neither reads nor writes it; None does as the run's config says.

        Multi-label models: subset accuracy, micro/macro-F1 and per-label scores at the tuned
        thresholds (:func:`rnnkit.metrics.multilabel_report`); ``labels`` are tuples of labels.
        A ``--hybrid`` run scores its mix, and adds the RNN's own scores under ``rnn_alone``.
        """
        from .calibration import expected_calibration_error, risk_coverage
        from .metrics import classification_report, multilabel_report

        if len(texts) != len(labels):
            raise RnnkitError(f"{len(texts)} texts but {len(labels)} labels; give one label per text")
        y = self.vectorizer.encode_labels(labels, source)
        texts = self._check_texts(texts, "evaluate")
        tokens = None
        if len(texts) >= CACHED_FROM:
            from .tokencache import tokenize_corpus

            # A split the run trained on is in the token cache already (NSMC's test split: 13-16 s of kiwi).
            cache = self.config.cache_tokens if cache_tokens is None else cache_tokens
            tokens = tokenize_corpus(self.vectorizer.tokenizer, texts, cache=cache,
                                     progress=self.config.progress, desc=source, log=lambda m: None)
        ids, lengths = self.vectorizer.encode_texts(texts, tokens)
        rnn_probs = predict_proba(self.model, ids, lengths, 256, self.device, self.amp)
        probs = self._mixed(rnn_probs, texts)
        if self.multilabel:
            return multilabel_report(y.numpy(), probs.numpy(), self.vectorizer.label_thresholds().numpy(),
                                     self.labels)
        report = classification_report(y.numpy(), probs.argmax(1).numpy(), self.labels)
        if self.hybrid is not None:  # the mix is what predict gives; the RNN's own numbers beside it
            alone = classification_report(y.numpy(), rnn_probs.argmax(1).numpy(), self.labels)
            report["rnn_alone"] = {k: alone[k] for k in ("accuracy", "macro_f1", "weighted_f1", "n")}
        report["ece"] = expected_calibration_error(probs, y)
        report["risk_coverage"] = risk_coverage(probs, y)
        return report

    def __repr__(self) -> str:
        test = self.metrics.get("test") or {}
        acc = f", test accuracy {test['accuracy']:.4f}" if "accuracy" in test else ""
        return f"Run({str(self.path)!r}, {self.config.cell}, {len(self.labels)} classes{acc})"


def load(path, device: str = "cpu", precision: Optional[str] = None) -> Run:
    """Load a finished run folder: ``rnnkit.load("runs/my-run").predict(["text"])``.

    ``precision``: None (as the run trained), ``"fp32"``, ``"bf16"`` or ``"auto"`` (see :meth:`Run.load`)."""
    return Run.load(path, device, precision)
