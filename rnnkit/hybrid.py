"""The network and the linear baseline together: ``rnnkit train --hybrid``.

The two make different mistakes: the RNN reads order and context, the linear model counts character and
word n-grams. Averaging their log-probabilities often beats both. On the default NSMC run of
2026-12-02 (BENCHMARKS.md), the RNN alone scored 0.8786 on test and the baseline 0.8703, and a
mix weighted on validation scored 0.8844.

How a hybrid run is built, after the network has trained and the baseline has chosen its settings
(:func:`rnnkit.baseline.fit_baseline`):

1. The baseline's chosen feature set and C are fitted again with scikit-learn's ``TfidfVectorizer``
   and ``LinearSVC`` (:class:`LinearNgramModel`), so that its vocabulary can be saved as text and
   new texts scored at prediction time. Seconds on most data, 17 s on NSMC (fit, scoring and choice).
2. Its decision scores become probabilities with one temperature, the one that fits validation best
   (lowest negative log-likelihood).
3. ``log p = w log p_rnn + (1 - w) log p_linear`` for ``w`` in 0, 0.05, ..., 1, keeping the ``w`` with
   the best validation accuracy (ties: the lowest validation loss, each at its own temperature). ``w = 1`` is the RNN alone, so a
   mix never loses to it on validation; test is scored once, with that ``w``.
4. A last temperature on the mixed log-probabilities makes its probabilities calibrated again.

The run folder gets ``hybrid.json`` (settings, weights, vocabularies) and ``hybrid.safetensors``
(idf weights, coefficients), and ``metrics.json`` a ``"hybrid"`` entry beside the RNN's own numbers,
which stay the run's headline. Where validation chose weight 1 (the RNN alone) only the entry is
written, with ``"saved": false``. :class:`rnnkit.predict.Run` predicts with the mix when a run has one
(``predict``, ``evaluate``, ``serve``); ``explain`` and ``export`` cover the RNN alone.
Single-label data only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from . import run as runio
from .errors import RnnkitError

FILES = ("hybrid.json", "hybrid.safetensors")
WEIGHTS = np.round(np.linspace(0.0, 1.0, 21), 2)  # 0.6, not 0.6000000000000001, in metrics.json
TEMPERATURES = np.geomspace(0.05, 50.0, 61)


def _blocks_of(features: str) -> list[dict]:
    """``"char 1-4 + words 1-2"`` -> the vectorizer settings of each block of columns."""
    blocks = []
    for part in features.split("+"):
        match = re.fullmatch(r"\s*(char|words) 1-(\d)\s*", part)
        if not match:
            raise RnnkitError(f"unknown baseline feature set {features!r}")
        kind, n = match.group(1), int(match.group(2))
        blocks.append({"analyzer": "char_wb" if kind == "char" else "word", "ngram_max": n})
    return blocks


def _vectorizer(block: dict, min_df: int = 1, vocabulary: Optional[Sequence[str]] = None, tfidf: bool = True):
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    from .baseline import WORD_PATTERN

    kind = TfidfVectorizer if tfidf else CountVectorizer
    extra = {"sublinear_tf": True} if tfidf else {}
    if block["analyzer"] == "word":  # (scikit-learn warns when a char analyzer is given one)
        extra["token_pattern"] = WORD_PATTERN
    return kind(analyzer=block["analyzer"], ngram_range=(1, block["ngram_max"]), min_df=min_df,
                vocabulary=vocabulary, dtype=np.float32, **extra)


class LinearNgramModel:
    """TF-IDF over character / word n-grams and a linear SVM, with plain arrays for weights.

    ``blocks``: per block of columns, its vectorizer settings, ``vocabulary`` (column order) and
    ``idf``; ``coef`` ``(classes or 1, columns)`` and ``intercept`` as scikit-learn's ``LinearSVC`` has them.
    """

    def __init__(self, blocks: list[dict], coef: np.ndarray, intercept: np.ndarray, n_classes: int):
        self.blocks, self.coef, self.intercept, self.n_classes = blocks, coef, intercept, n_classes
        self._counters: Optional[list] = None  # built on first use: a vocabulary of 10^5 n-grams takes a while

    @classmethod
    def fit(cls, texts: Sequence[str], y: np.ndarray, n_classes: int, features: str, C: float,
            min_df: int = 1) -> "LinearNgramModel":
        import warnings

        from scipy import sparse
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.svm import LinearSVC

        blocks, mats = [], []
        for block in _blocks_of(features):
            vec = _vectorizer(block, min_df)
            mats.append(vec.fit_transform(texts))
            vocabulary = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
            blocks.append({**block, "vocabulary": vocabulary, "idf": vec.idf_.astype(np.float32)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # as the baseline: a near-converged SVM ranks fine
            svm = LinearSVC(C=C, random_state=0, max_iter=2000).fit(sparse.hstack(mats, format="csr"), y)
        if list(svm.classes_) != list(range(n_classes)):
            raise RnnkitError("the hybrid needs training examples of every class")
        return cls(blocks, svm.coef_.astype(np.float32), svm.intercept_.astype(np.float32), n_classes)

    def features(self, texts: Sequence[str]):
        """The TF-IDF rows of ``texts``: sublinear counts times idf, each block L2-normalized, as fitted."""
        from scipy import sparse
        from sklearn.preprocessing import normalize

        if self._counters is None:
            self._counters = [_vectorizer(b, vocabulary=b["vocabulary"], tfidf=False) for b in self.blocks]
        mats = []
        for block, counter in zip(self.blocks, self._counters):
            counts = counter.transform(texts)
            counts.data = (1.0 + np.log(counts.data)) * block["idf"][counts.indices]
            mats.append(normalize(counts, copy=False))
        return sparse.hstack(mats, format="csr")

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Decision scores ``(n, classes)``; two classes get ``(-s/2, s/2)`` from the SVM's one score."""
        s = np.asarray(self.features(texts) @ self.coef.T) + self.intercept
        if self.n_classes == 2:
            s = np.concatenate([-s / 2, s / 2], axis=1)
        return s.astype(np.float32)

    def to_dict(self) -> dict:
        return {"n_classes": self.n_classes,
                "blocks": [{k: v for k, v in b.items() if k != "idf"} for b in self.blocks]}

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"coef": torch.from_numpy(self.coef), "intercept": torch.from_numpy(self.intercept)}
        out.update({f"idf.{i}": torch.from_numpy(b["idf"]) for i, b in enumerate(self.blocks)})
        return out

    @classmethod
    def from_saved(cls, info: dict, tensors: dict[str, torch.Tensor]) -> "LinearNgramModel":
        try:
            blocks = [{**b, "idf": tensors[f"idf.{i}"].numpy()} for i, b in enumerate(info["blocks"])]
            coef, intercept, n_classes = tensors["coef"].numpy(), tensors["intercept"].numpy(), info["n_classes"]
        except KeyError as exc:
            raise RnnkitError(f"the hybrid's files lack {exc.args[0]!r}; restore them or re-train") from None
        columns = sum(len(b["vocabulary"]) for b in blocks)
        rows = 1 if n_classes == 2 else n_classes
        if (any(len(b["idf"]) != len(b["vocabulary"]) for b in blocks) or coef.shape != (rows, columns)
                or intercept.shape != (rows,)):
            raise RnnkitError("the hybrid's weights do not fit its vocabulary (damaged files); restore them or re-train")
        return cls(blocks, coef, intercept, n_classes)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _nll(log_p: np.ndarray, y: np.ndarray) -> float:
    return float(-log_p[np.arange(len(y)), y].mean())


def _best_temperature(z: np.ndarray, y: np.ndarray) -> float:
    """The scale ``t`` of ``softmax(t * z)`` with the lowest validation loss; 1 where validation has no
    errors, since the loss then falls without end as ``t`` grows (as the RNN's own temperature does)."""
    if (z.argmax(1) == y).all():
        return 1.0
    return float(min(TEMPERATURES, key=lambda t: _nll(_log_softmax(t * z), y)))


class Hybrid:
    """The RNN's probabilities mixed with a :class:`LinearNgramModel`'s: see the module's text."""

    def __init__(self, linear: LinearNgramModel, weight: float, linear_temperature: float, temperature: float):
        self.linear, self.weight = linear, weight
        self.linear_temperature, self.temperature = linear_temperature, temperature

    def _mixed(self, rnn_probs: np.ndarray, scores: np.ndarray) -> np.ndarray:
        rnn = np.log(np.clip(rnn_probs, 1e-12, 1.0))
        return self.weight * rnn + (1.0 - self.weight) * _log_softmax(self.linear_temperature * scores)

    def probabilities(self, rnn_probs: torch.Tensor, scores: np.ndarray) -> np.ndarray:
        """The mix's calibrated probabilities from the RNN's probabilities and the linear model's scores."""
        return np.exp(_log_softmax(self.temperature * self._mixed(rnn_probs.float().numpy(), scores)))

    def mix(self, rnn_probs: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Calibrated probabilities ``(n, classes)`` of the mix for ``texts`` (already normalized as the run
        normalizes text) and the RNN's probabilities of them."""
        return torch.from_numpy(self.probabilities(rnn_probs, self.linear.scores(texts)))

    @classmethod
    def choose(cls, linear: LinearNgramModel, rnn_val: torch.Tensor, scores_val: np.ndarray,
               y_val: np.ndarray) -> "Hybrid":
        """Temperatures and the RNN's weight chosen on validation (accuracy, then loss)."""
        t_linear = _best_temperature(scores_val, y_val)
        rnn = np.log(np.clip(rnn_val.float().numpy(), 1e-12, 1.0))
        linear_log_p = _log_softmax(t_linear * scores_val)

        def rank(w: float) -> tuple:
            """(val accuracy, -val loss at its own temperature, that temperature, w) of the mix at ``w``."""
            mixed = w * rnn + (1.0 - w) * linear_log_p
            t = _best_temperature(mixed, y_val)
            return float((mixed.argmax(1) == y_val).mean()), -_nll(_log_softmax(t * mixed), y_val), t, float(w)

        # max() keeps the first of equal (accuracy, loss) pairs, as over the weights themselves
        *_, temperature, weight = max((rank(w) for w in WEIGHTS), key=lambda r: r[:2])
        return cls(linear, weight, t_linear, temperature)

    def save(self, run_dir: Path) -> list[str]:
        """Write the two files into the run folder; returns their names for the manifest."""
        runio.save_tensors(run_dir / FILES[1], self.linear.tensors(), {"format": "rnnkit-hybrid"})
        runio.atomic_write_json(run_dir / FILES[0], {
            "weight": self.weight, "linear_temperature": self.linear_temperature, "temperature": self.temperature,
            "linear": self.linear.to_dict()})
        return list(FILES)

    @classmethod
    def load(cls, run_dir: Path, n_classes: Optional[int] = None) -> Optional["Hybrid"]:
        """The run's hybrid, or None when it has none; ``n_classes``, when given, must match its own."""
        if not (run_dir / FILES[0]).exists():
            return None
        info = runio.read_json(run_dir / FILES[0])
        linear = LinearNgramModel.from_saved(info["linear"], runio.load_tensors(run_dir / FILES[1]))
        if n_classes is not None and linear.n_classes != n_classes:
            raise RnnkitError(f"the hybrid has {linear.n_classes} classes, the run {n_classes}; restore it or re-train")
        return cls(linear, info["weight"], info["linear_temperature"], info["temperature"])


def build(texts: dict[str, Sequence[str]], y: dict[str, np.ndarray], rnn_probs: dict[str, torch.Tensor],
          n_classes: int, baseline: dict, labels: Sequence[str]) -> tuple[Hybrid, dict]:
    """Fit the hybrid of a finished run: ``texts`` and ``y`` per split (normalized texts, class ids),
    ``rnn_probs`` the RNN's calibrated probabilities on val (and test), ``baseline`` the run's baseline
    result (its settings are reused). Returns the hybrid and its ``metrics.json`` entry."""
    import time

    from .metrics import classification_report

    started = time.perf_counter()
    settings = baseline["settings"]
    linear = LinearNgramModel.fit(texts["train"], y["train"], n_classes, settings["features"], settings["C"],
                                  settings.get("min_df", 1))
    scores = {s: linear.scores(texts[s]) for s in rnn_probs}
    hybrid = Hybrid.choose(linear, rnn_probs["val"], scores["val"], y["val"])
    entry: dict = {}
    for s in rnn_probs:
        report = classification_report(y[s], hybrid.probabilities(rnn_probs[s], scores[s]).argmax(1), list(labels))
        entry[s] = {k: report[k] for k in ("accuracy", "macro_f1", "weighted_f1", "n")}
    # At weight 1 the mix is the RNN alone: nothing is saved, and the run predicts as any other.
    entry.update(weight=hybrid.weight, linear_temperature=hybrid.linear_temperature,
                 temperature=hybrid.temperature, settings=dict(settings), saved=hybrid.weight < 1.0,
                 seconds=round(time.perf_counter() - started, 2))
    return hybrid, entry


def summary_line(entry: dict, metrics: dict) -> str:
    """``hybrid (RNN weight 0.45 + linear baseline, chosen on val): val accuracy ... test accuracy ...``."""
    parts = [f"{s} accuracy {entry[s]['accuracy']:.4f} (RNN alone {metrics[s]['accuracy']:.4f}) "
             f"macro-F1 {entry[s]['macro_f1']:.4f}" for s in ("val", "test") if s in entry]
    alone = "  [the RNN alone: weight 1, so the run predicts with the RNN]" if not entry["saved"] else ""
    return (f"hybrid (RNN weight {entry['weight']:.2f} + linear baseline, chosen on val; "
            f"{entry['seconds']:.1f}s): " + "  ".join(parts) + alone)
