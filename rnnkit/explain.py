"""Which tokens drove a prediction: Integrated Gradients and occlusion, one score per token.

>>> run = rnnkit.load("runs/nsmc")                                   # doctest: +SKIP
>>> e = run.explain(["연기는 좋은데 스토리가 지루하다"])[0]            # doctest: +SKIP
>>> e.label, [(t, round(s, 2)) for t, s in e.tokens]                 # doctest: +SKIP

Tokens are what the run's own tokenizer made of the text (Kiwi morphemes, characters,
sentencepiece pieces), so a score belongs to exactly what the network read. A positive
score pushed the probability of the explained class up, a negative one pulled it down.

**Integrated Gradients** (Sundararajan et al., 2017), the default. The network reads
embedding vectors ``x_t``. Walk from a baseline where every token's vector is zero (what
the padding embedding is: "no text"; the ``<bos>``/``<eos>`` markers keep theirs) to the real
``x`` and integrate the gradient of the class probability along the way; token ``t`` gets
``sum_e x_te * mean_alpha dP/dx_te(baseline + alpha (x - baseline))``. The scores add up to
``P(x) - P(baseline)`` (completeness), up to the error of the quadrature,
:attr:`Explanation.delta`. The ``steps`` points of the path run as one batch,
Gauss-Legendre placed as Captum places them. A probability can jump within a short stretch
of the path (a surname turns Irish between 25% and 30% of its embedding), and 16 points
then miss the jump: so while ``|delta|`` exceeds ``tolerance`` the piece of the path that
misses most is cut around the jump and integrated again (adaptive quadrature), up to ``MAX_STEPS`` points. ``tests/test_explain.py`` checks the scores against Captum's
``IntegratedGradients`` when Captum is installed.

**Occlusion**, the check: delete one token at a time (the sequence gets one shorter, no
placeholder is invented) and score the token by how much the probability falls.

Both compute in fp32, even for a run that predicts in bf16 (:meth:`rnnkit.Run.load`): under bf16
autocast IG's scores missed completeness by 0.004 after 504 path points on a toy run, where fp32
meets 0.001. The probabilities shown are then fp32 ones, which can differ from ``predict``'s bf16
ones in the third decimal (by at most 0.0024 on 150 NSMC reviews).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .config import EXPLAIN_MAX_STEPS as MAX_STEPS, EXPLAIN_STEPS as DEFAULT_STEPS
from .errors import RnnkitError

METHODS = ("ig", "occlusion")
SCALE_FLOOR = 0.01
"""Scores (in probability) below this are drawn faint however the text's other scores compare."""
CHUNK = 64
"""Rows per forward pass: bounds memory on long texts (occlusion has one row per token)."""
TOLERANCE = 0.02


@dataclass
class Explanation:
    text: str
    label: str
    """The predicted label (calibrated arg-max)."""
    probability: float
    tokens: list[tuple[str, float]]
    """``(token, score)`` per token the model read, in text order."""
    target: str
    """The class the scores explain: ``label`` unless another was asked for."""
    target_probability: float
    method: str
    truncated: int = 0
    """Tokens past the run's ``max_len``: the model never read them, so they have no score."""
    delta: Optional[float] = None
    """IG only: ``sum(scores) - (P(text) - P(baseline))``, the quadrature error."""
    steps: Optional[int] = None
    """IG only: the points on the path used (``steps``, more where the path was refined to reach ``tolerance``)."""

    def to_dict(self) -> dict:
        out = {"text": self.text, "label": self.label, "probability": round(self.probability, 6),
               "tokens": [{"token": t, "score": round(s, 6)} for t, s in self.tokens],
               "target": self.target, "target_probability": round(self.target_probability, 6),
               "method": self.method}
        if self.truncated:
            out["truncated"] = self.truncated
        if self.delta is not None:
            out["delta"] = round(self.delta, 6)
            out["steps"] = self.steps
        return out


def gauss_legendre(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``alpha`` in (0, 1) and weights summing to 1 for integrating over ``[0, 1]``."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return torch.tensor((nodes + 1) / 2, dtype=torch.float32), torch.tensor(weights / 2, dtype=torch.float32)


def _no_cudnn(device: torch.device):
    """cuDNN computes an RNN's backward in training mode only; IG needs it in eval mode."""
    return torch.backends.cudnn.flags(enabled=False) if device.type == "cuda" else contextlib.nullcontext()


def _prepare(model, ids: torch.Tensor, positions: Optional[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The text's embeddings ``x (1, T, E)`` and a ``(1, T, 1)`` mask of the positions the path varies."""
    with torch.no_grad():
        x = model.embed(ids)
    varied = torch.zeros(1, ids.shape[1], 1, device=x.device)
    varied[:, list(range(ids.shape[1])) if positions is None else list(positions)] = 1.0
    return x, varied


def _walk(model, ids: torch.Tensor, x: torch.Tensor, varied: torch.Tensor, target: Optional[int],
          alphas: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """For each point ``alpha`` of the path: ``weight * dP/dx . x`` per token ``(points, T)`` and
    ``P`` itself ``(points,)``, in batches of at most ``CHUNK`` rows; also every class's probability
    at the first point ``(C,)`` and the target.

    ``target`` None: the class the model predicts at the first point, which is then the text itself
    (``alpha`` 1), so explaining the prediction needs no forward pass of its own. The chunks keep
    memory bounded for long texts. The cost grows with points x tokens: on the NSMC model about 30
    microseconds per point and token on this project's 2-core CPU, plus about 5 ms per chunk.
    """
    alphas, weights = alphas.to(x.device), weights.to(x.device)
    terms, probs, first = [], [], None
    with _no_cudnn(x.device):
        for start in range(0, len(alphas), CHUNK):
            a, w = alphas[start: start + CHUNK], weights[start: start + CHUNK]
            # baseline + alpha * (x - baseline), the baseline being x with the varied positions zeroed
            path = (x * (1 - varied) + a[:, None, None] * x * varied).requires_grad_(True)  # (rows, T, E)
            n = len(a)
            every = model.probabilities(model(ids.expand(n, -1), torch.tensor([ids.shape[1]]).expand(n),
                                              embedded=path))
            if first is None:
                first = every[0].detach()
                target = int(first.argmax()) if target is None else target
            p = every[:, target]
            (grads,) = torch.autograd.grad((p * w).sum(), path)
            terms.append((grads * x * varied).sum(-1))
            probs.append(p.detach())
    return torch.cat(terms), torch.cat(probs), first, target


def integrated_gradients(model, ids: torch.Tensor, target: int, steps: int = DEFAULT_STEPS,
                         positions: Optional[Sequence[int]] = None) -> tuple[torch.Tensor, float]:
    """IG scores ``(T,)`` for one sequence ``ids (1, T)`` with a ``steps``-point Gauss-Legendre
    rule over the whole path, and the completeness gap.

    The baseline zeroes the embeddings at ``positions`` (default: all) and keeps the rest, so
    ``<bos>``/``<eos>`` left out of ``positions`` score exactly 0 and the scores of ``positions``
    add up to ``P(text) - P(baseline)`` up to the returned gap. The path's two ends (the text,
    the baseline) run in the same batches as its points.
    """
    x, varied = _prepare(model, ids, positions)
    alphas, weights = gauss_legendre(steps)
    # the ends carry no weight: they only give P(text) and P(baseline)
    terms, p, _, _ = _walk(model, ids, x, varied, target, torch.cat([alphas, torch.tensor([1.0, 0.0])]),
                           torch.cat([weights, torch.zeros(2)]))
    scores = terms.sum(0)
    return scores, float(scores.sum() - (p[steps] - p[steps + 1]))


@torch.no_grad()
def occlusion(model, ids: torch.Tensor, positions: Sequence[int], target: int,
              filler: Optional[int] = None) -> torch.Tensor:
    """For each position in ``positions``: ``P(ids) - P(ids without that token)``, in batches of
    at most ``CHUNK`` rows.

    ``filler``: put this id in the token's place instead of deleting it (used only when deleting
    would leave nothing to read).
    """
    row = ids[0]
    variants = [row]
    for t in positions:
        if filler is None:
            variants.append(torch.cat([row[:t], row[t + 1:]]))
        else:
            variants.append(torch.cat([row[:t], row.new_tensor([filler]), row[t + 1:]]))
    p = []
    for start in range(0, len(variants), CHUNK):
        part = variants[start: start + CHUNK]
        batch = torch.nn.utils.rnn.pad_sequence(part, batch_first=True)
        p.append(model.probabilities(model(batch, torch.tensor([len(v) for v in part])))[:, target])
    p = torch.cat(p)
    return p[0] - p[1:]


def adaptive_integrated_gradients(model, ids: torch.Tensor, target: int, steps: int = DEFAULT_STEPS,
                                  tolerance: float = TOLERANCE, max_points: int = MAX_STEPS,
                                  positions: Optional[Sequence[int]] = None) -> tuple[torch.Tensor, float, int]:
    """IG that refines the path where it needs it; returns ``(scores, delta, points used)``.

    The first pass is :func:`integrated_gradients` with ``steps`` points. While ``|delta|`` exceeds
    ``tolerance``, the piece of the path whose own gap ``sum(its scores) - (P(end) - P(start))``
    is largest is cut where ``P``, known at that piece's points, moved most between two neighbours:
    that stretch and the parts on either side each get their own ``steps // 4``-point rule
    (adaptive quadrature). A probability that jumps within a short stretch of the path is
    bracketed in one or two rounds instead of doubling the points everywhere; each round is one
    batch, and rounds cost more than rows on short texts. Stops at ``max_points`` points in all,
    and ``delta`` then says how far off it is (BENCHMARKS.md, "Explanations").
    """
    scores, delta, used, _, _ = _adaptive(model, ids, target, steps, tolerance, max_points, positions)
    return scores, delta, used


def _adaptive(model, ids: torch.Tensor, target: Optional[int], steps: int, tolerance: float, max_points: int,
              positions: Optional[Sequence[int]]) -> tuple[torch.Tensor, float, int, torch.Tensor, int]:
    """:func:`adaptive_integrated_gradients`, plus the text's class probabilities ``(C,)`` and the
    target: ``target`` None explains the predicted class, read off the path's end at the text."""
    x, varied = _prepare(model, ids, positions)
    nodes, weights = gauss_legendre(steps)
    # The text (alpha 1) comes first: with target None, its row decides the class explained.
    terms, p, text_probs, target = _walk(model, ids, x, varied, target, torch.cat([torch.tensor([1.0, 0.0]), nodes]),
                                         torch.cat([torch.zeros(2), weights]))
    # pieces of the path: (start, end, P(start), P(end), token scores from that piece,
    # [(alpha, P)] at the piece's own points)
    pieces = [(0.0, 1.0, float(p[1]), float(p[0]), terms[2:].sum(0), list(zip(nodes.tolist(), p[2:].tolist())))]
    used, small = steps, max(steps // 4, 2)
    nodes, weights = gauss_legendre(small)
    while True:
        gaps = [float(piece[4].sum()) - (piece[3] - piece[2]) for piece in pieces]
        if abs(sum(gaps)) <= tolerance or used + 3 * small > max_points:
            break
        i = max(range(len(pieces)), key=lambda j: abs(gaps[j]))
        a, b, p0, p1, _, seen = pieces[i]
        # The rule missed a jump of P, and P is known at its points: cut out the stretch between
        # the two neighbouring points where P moved most. One round brackets the jump as closely
        # as several halvings would, and the cuts need no extra rows.
        profile = [(a, p0)] + seen + [(b, p1)]
        k = max(range(len(profile) - 1), key=lambda j: abs(profile[j + 1][1] - profile[j][1]))
        cuts = sorted({profile[0], profile[k], profile[k + 1], profile[-1]})
        spans = list(zip(cuts, cuts[1:]))  # 2 or 3 pieces, each with its own small rule
        alphas = torch.cat([u + (v - u) * nodes for (u, _), (v, _) in spans])
        terms, p, _, _ = _walk(model, ids, x, varied, target, alphas,
                         torch.cat([(v - u) * weights for (u, _), (v, _) in spans]))
        pieces[i: i + 1] = [(u, v, pu, pv, terms[j * small: (j + 1) * small].sum(0),
                             list(zip(alphas[j * small: (j + 1) * small].tolist(),
                                      p[j * small: (j + 1) * small].tolist())))
                            for j, ((u, pu), (v, pv)) in enumerate(spans)]
        used += len(spans) * small
    scores = sum(piece[4] for piece in pieces)
    return scores, sum(gaps), used, text_probs, target


def explain_texts(run, texts: Sequence[str] | str, method: str = "ig", target: Optional[str] = None,
                  steps: int = DEFAULT_STEPS, tolerance: float = TOLERANCE) -> list[Explanation]:
    """One :class:`Explanation` per text (see the module docstring); ``run`` is a loaded :class:`~rnnkit.Run`."""
    if method not in METHODS:
        raise RnnkitError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if not isinstance(steps, int) or not 2 <= steps <= MAX_STEPS:
        raise RnnkitError(f"steps must be an integer from 2 to {MAX_STEPS}; got {steps!r}")
    if not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise RnnkitError(f"tolerance must be a probability gap >= 0, e.g. 0.02; got {tolerance!r}")
    texts = run._check_texts(texts, "explain")
    labels = run.labels
    if target is not None and target not in labels:
        target = run.vectorizer.label_names.get(target, target)  # a raw label ("0") for its shown name ("neg")
    if target is not None and target not in labels:
        shown = ", ".join(labels[:20]) + (", ..." if len(labels) > 20 else "")
        raise RnnkitError(f"unknown target label {target!r}; this run's labels are: {shown}")
    vec, model = run.vectorizer, run.model
    model.eval()
    out = []
    for text, toks in zip(texts, vec.tokenizer.batch(texts)):
        if not toks:
            raise RnnkitError(f"text {text!r} is empty after tokenization; give real text")
        ids, _, _ = vec.encode_tokens([toks])
        ids = ids.long().to(run.device)
        first = 1 if vec.add_bos_eos else 0
        kept = min(len(toks), ids.shape[1] - 2 * first)
        positions = list(range(first, first + kept))
        delta = used = None
        if method == "ig":
            # The path's first point is the text: its forward pass gives the prediction as well.
            scores, delta, used, probs, t = _adaptive(model, ids, None if target is None else labels.index(target),
                                                      steps, tolerance, MAX_STEPS, positions)
            scores, probs = scores[positions], probs.cpu()
            best = int(probs.argmax())
        else:
            with torch.no_grad():
                probs = model.probabilities(model(ids, torch.tensor([ids.shape[1]])))[0].cpu()
            best = int(probs.argmax())
            t = labels.index(target) if target is not None else best
            # A lone token without begin/end markers cannot be deleted: stand <unk> in for it.
            filler = vec.vocab.unk_index if ids.shape[1] == 1 else None
            scores = occlusion(model, ids, positions, t, filler)
        out.append(Explanation(text, labels[best], float(probs[best]),
                               [(tok, float(s)) for tok, s in zip(toks[:kept], scores.cpu().tolist())],
                               labels[t], float(probs[t]), method, len(toks) - kept, delta, used))
    return out


# --------------------------------------------------------------------------- #
# terminal view
# --------------------------------------------------------------------------- #
def _joiner(tokenizer_name: str) -> str:
    return "" if tokenizer_name in ("char", "syllable") else " "


def display_token(token: str) -> str:
    """How a token is shown: sentencepiece's word-start mark as a space, wordpiece's ``##`` glued on."""
    if token.startswith("##") and len(token) > 2:
        return token[2:]
    return token.replace("\u2581", " ").strip() or token


def render(explanation: Explanation, tokenizer_name: str = "whitespace"):
    """A :class:`rich.text.Text`: each token on a background green (for the class) or red (against),
    stronger for larger scores, relative to the largest score of this text."""
    from rich.text import Text

    # Relative to this text's largest score, but never below SCALE_FLOOR: when every score is
    # tiny (a prediction the baseline shares), the noise is not painted at full strength.
    scale = max([abs(s) for _, s in explanation.tokens] + [SCALE_FLOOR])
    line = Text()
    for i, (token, score) in enumerate(explanation.tokens):
        if i and not (tokenizer_name == "wordpiece" and token.startswith("##")):  # a piece of the word before
            line.append(_joiner(tokenizer_name))
        strength = min(abs(score) / scale, 1.0)
        # Blend from white toward green (supports) or red (opposes); black text stays readable.
        r, g, b = (255 - int(150 * strength), 255, 255 - int(150 * strength)) if score >= 0 else \
            (255, 255 - int(150 * strength), 255 - int(150 * strength))
        line.append(display_token(token), style=f"black on rgb({r},{g},{b})")
    return line
