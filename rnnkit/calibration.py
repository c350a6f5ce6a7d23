"""Can this probability be trusted? Temperature scaling, ECE, reliability diagrams, risk-coverage.

A network trained with cross-entropy is usually over-confident: of the reviews it calls
positive with probability 0.95, fewer than 95% are. Temperature scaling (Guo et al., 2017,
"On Calibration of Modern Neural Networks") divides every logit by one number ``T`` fitted
on the validation split to minimise its negative log-likelihood. Accuracy cannot change
(the arg-max is the same); the probabilities move toward what they claim.

The expected calibration error (ECE) measures the gap: sort predictions into 15 equal-width
bins of confidence, and average ``|accuracy - confidence|`` over bins weighted by their size.

Multi-label models have one sigmoid per label: every (text, label) pair is then one binary
prediction (confidence ``max(p, 1 - p)``, right when ``p >= 0.5`` matches the truth), and
``T`` scales all the label logits alike.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import numpy as np
import torch

BINS = 15
RISK_THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def probabilities(logits: torch.Tensor, temperature: float | torch.Tensor = 1.0,
                  multilabel: bool = False) -> torch.Tensor:
    """Softmax (or per-label sigmoid) of ``logits / temperature``: ``(n, C)``; what
    :meth:`rnnkit.model.SequenceClassifier.probabilities` returns with the model's fitted temperature."""
    z = logits / temperature
    return torch.sigmoid(z) if multilabel else torch.softmax(z, dim=-1)


def _confidence_correct(probs: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per prediction: the confidence the model states and whether it was right."""
    if y.ndim == 2:  # multi-label: one binary decision per (text, label)
        p = probs.reshape(-1)
        truth = y.reshape(-1) > 0.5
        conf = torch.maximum(p, 1 - p)
        right = (p >= 0.5) == truth
    else:
        conf, pred = probs.max(dim=1)
        right = pred == y
    return conf.double().numpy(), right.double().numpy()


def reliability(probs: torch.Tensor, y: torch.Tensor, bins: int = BINS) -> dict:
    """Per equal-width confidence bin: ``count``, mean ``confidence`` and ``accuracy`` (None when empty)."""
    conf, right = _confidence_correct(probs, y)
    # Bin i holds confidences in (i/bins, (i+1)/bins]; a confidence of exactly 0 joins the first bin.
    index = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    right_sum = np.bincount(index, weights=right, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, acc = conf_sum / count, right_sum / count
    return {"edges": [i / bins for i in range(bins + 1)], "count": count.tolist(),
            "confidence": [None if c == 0 else float(v) for c, v in zip(count, mean_conf)],
            "accuracy": [None if c == 0 else float(v) for c, v in zip(count, acc)]}


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, bins: int = BINS) -> float:
    """ECE: the bin-size-weighted mean of ``|accuracy - confidence|`` over ``bins`` equal-width bins."""
    return ece_of(reliability(probs, y, bins))


def ece_of(table: dict) -> float:
    """The ECE of a :func:`reliability` table."""
    n = sum(table["count"])
    return float(sum(c * abs(a - f) for c, a, f in zip(table["count"], table["accuracy"], table["confidence"])
                     if c) / max(n, 1))


def negative_log_likelihood(logits: torch.Tensor, y: torch.Tensor, temperature: float) -> float:
    z = logits.double() / temperature
    if y.ndim == 2:
        return float(torch.nn.functional.binary_cross_entropy_with_logits(z, y.double()))
    return float(torch.nn.functional.cross_entropy(z, y))


def fit_temperature(logits: torch.Tensor, y: torch.Tensor, low: float = 0.05, high: float = 20.0,
                    iterations: int = 80) -> float:
    """The ``T`` in ``[low, high]`` that minimises the NLL of ``logits / T`` on ``(logits, y)``.

    The NLL is convex in ``1 / T``, so a golden-section search over ``1 / T`` finds the
    optimum to ~1e-6 without a learning rate, and gives the same ``T`` on every machine.

    Returns 1 (no scaling) when no prediction in ``(logits, y)`` is wrong: the NLL then keeps
    falling as ``T -> 0``, and the "optimum" would be the bound, a model made as sharp as
    allowed on the strength of a validation split it happens to get all right.
    """
    if len(y) == 0 or not bool(_errors(logits, y).any()):
        return 1.0
    a, b = 1.0 / high, 1.0 / low
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = negative_log_likelihood(logits, y, 1 / c), negative_log_likelihood(logits, y, 1 / d)
    for _ in range(iterations):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = negative_log_likelihood(logits, y, 1 / c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = negative_log_likelihood(logits, y, 1 / d)
    return float(1.0 / ((a + b) / 2))


def _errors(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if y.ndim == 2:  # multi-label: each label's decision at 0.5, i.e. logit 0
        return (logits > 0) != (y > 0.5)
    return logits.argmax(1) != y


def calibration_report(logits: torch.Tensor, y: torch.Tensor, temperature: float) -> dict:
    """``{temperature, ece_before, ece_after}`` for one split (before: ``T = 1``)."""
    multilabel = y.ndim == 2
    return {"temperature": round(float(temperature), 6),
            "ece_before": expected_calibration_error(probabilities(logits, 1.0, multilabel), y),
            "ece_after": expected_calibration_error(probabilities(logits, temperature, multilabel), y)}


def risk_coverage(probs: torch.Tensor, y: torch.Tensor,
                  thresholds: Sequence[float] = RISK_THRESHOLDS) -> list[dict]:
    """What abstaining below each threshold buys: per threshold, the share of texts still answered
    (``coverage``) and the accuracy on those (``accuracy``, None when none is answered).

    Single-label only: a text is answered when its top probability is at least the threshold.
    """
    conf, pred = probs.max(dim=1)
    right = pred == y
    rows = []
    for t in thresholds:
        kept = conf >= t
        n = int(kept.sum())
        rows.append({"threshold": float(t), "coverage": n / max(len(y), 1), "answered": n,
                     "accuracy": float(right[kept].double().mean()) if n else None})
    return rows


def plot_reliability(before: dict, after: dict, temperature: float, path: str | os.PathLike,
                     title: Optional[str] = None) -> str:
    """A reliability diagram: accuracy against confidence per bin, before and after scaling.

    ``before`` / ``after`` are :func:`reliability` tables; a calibrated model lies on the diagonal.
    """
    from .metrics import _atomic_savefig, _close, _new_figure

    fig = _new_figure((9.0, 4.2))
    try:
        for k, (table, name) in enumerate(((before, "before (T = 1)"), (after, f"after (T = {temperature:.2f})"))):
            ax = fig.add_subplot(1, 2, k + 1)
            edges = np.asarray(table["edges"])
            width = edges[1] - edges[0]
            acc = [a if a is not None else 0.0 for a in table["accuracy"]]
            conf = [c if c is not None else 0.0 for c in table["confidence"]]
            ax.bar(edges[:-1], acc, width=width, align="edge", color="#4C72B0", edgecolor="white",
                   label="accuracy in bin")
            centers = edges[:-1] + width / 2
            filled = [i for i, c in enumerate(table["count"]) if c]
            ax.plot(centers[filled], np.asarray(conf)[filled], "o", color="#DD8452", markersize=4,
                    label="mean confidence in bin")
            ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
            ax.set_title(f"{name}: ECE {ece_of(table):.3f}")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("confidence")
            ax.set_ylabel("accuracy")
            if k == 0:
                ax.legend(loc="upper left", fontsize=8)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return _atomic_savefig(fig, path)
    finally:
        _close(fig)
