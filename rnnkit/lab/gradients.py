"""Vanishing gradients, measured: how much of the loss's gradient reaches step t?

For a sequence of length ``T`` classified from its last hidden state, the
gradient that reaches an earlier state is a product of ``T - t`` Jacobians
``dh_{k+1}/dh_k``. For an Elman RNN each factor carries ``W_hh`` and the tanh
derivative (at most 1), so the product usually shrinks geometrically: the
network gets almost no signal about what happened long ago. LSTM and GRU carry
their state through a gated, additive path, so the product can stay near 1.

The experiment steps each trained layer's cell by hand so every ``h_t`` is a
tensor whose gradient we can keep, and plots the mean ``||dL/dh_t||`` against
the distance ``T - t``, at initialization and after training on the memory task
(:mod:`rnnkit.lab.memory`), on a log scale.
"""

from __future__ import annotations

from pathlib import Path

from . import pyplot, save_figure, seeded
from .memory import fit, make_model, make_task

MODELS = {
    "Elman RNN (tanh)": dict(cell="rnn", nonlinearity="tanh"),
    "Elman RNN (relu)": dict(cell="rnn", nonlinearity="relu"),
    "LSTM": dict(cell="lstm"),
    "GRU": dict(cell="gru"),
}
# lr 3e-3: at 1e-2 the tanh Elman RNN's head died (ReLU units all off) on length 100, which
# zeroes every gradient and says nothing about the recurrence.
FULL = dict(length=100, hidden=32, max_steps=1500, lr=3e-3, probe_batch=256)
QUICK = dict(length=30, hidden=32, max_steps=200, lr=1e-2, probe_batch=64)


def gradient_by_distance(model, ids, labels) -> list[float]:
    """Mean ``||dL/dh_t||`` over the batch for every step, indexed by distance ``T - 1 - t``.

    ``model`` is a one-layer unidirectional :class:`SequenceClassifier` with
    ``pooling="last"``; its fused RNN weights are copied into the matching
    ``nn.*Cell`` so each step's state can keep its gradient.
    """
    import torch
    from torch import nn

    rnn = model.rnn
    cell_type = {"RNN": nn.RNNCell, "LSTM": nn.LSTMCell, "GRU": nn.GRUCell}[type(rnn).__name__]
    kwargs = {"nonlinearity": rnn.nonlinearity} if cell_type is nn.RNNCell else {}
    cell = cell_type(rnn.input_size, rnn.hidden_size, **kwargs)
    cell.load_state_dict({name.removesuffix("_l0"): p for name, p in rnn.state_dict().items()})
    model.eval()
    x = model.embedding(ids)
    batch, length = ids.shape
    h = torch.zeros(batch, rnn.hidden_size)
    c = torch.zeros(batch, rnn.hidden_size)
    states = []
    for t in range(length):
        if cell_type is nn.LSTMCell:
            h, c = cell(x[:, t], (h, c))
        else:
            h = cell(x[:, t], h)
        h.retain_grad()
        states.append(h)
    logits = model.fc2(torch.relu(model.fc1(states[-1])))
    torch.nn.functional.cross_entropy(logits, labels).backward()
    norms = [float(s.grad.norm(dim=1).mean()) for s in states]
    model.zero_grad(set_to_none=True)
    return norms[::-1]


def run(out: Path, quick: bool = False, seed: int = 0, log=print) -> dict:
    settings = QUICK if quick else FULL
    length = settings["length"]
    results = {}
    for index, (name, spec) in enumerate(MODELS.items()):
        generator = seeded(seed * 1000 + index)
        model = make_model(spec["cell"], settings["hidden"], nonlinearity=spec.get("nonlinearity", "tanh"))
        probe = make_task(settings["probe_batch"], length - 1, generator, key_position=0)
        at_init = gradient_by_distance(model, *probe)
        trained = fit(model, length - 1, generator, settings["max_steps"], lr=settings["lr"])
        after = gradient_by_distance(model, *probe)
        results[name] = {"init": at_init, "trained": after, "training": trained}
        log(f"gradients: {name:17s} ||dL/dh|| at distance {length - 1} / at 0: "
            f"init {_ratio(at_init):.1e}, trained {_ratio(after):.1e}  "
            f"(memory task val accuracy {trained['val_accuracy']:.2f} after {trained['steps']} steps)")
    figure = _plot(results, out / "gradients.png")
    findings = [
        f"{name}: the gradient falls by 1e6 {_shown(_steps_to_fall(r['init']))} at "
        f"initialization and {_shown(_steps_to_fall(r['trained']))} after training; at distance {length - 1} "
        f"it is {_ratio_text(r['init'])} and {_ratio_text(r['trained'])} of the gradient at the last step "
        f"(memory task accuracy after training {r['training']['val_accuracy']:.2f})"
        for name, r in results.items()
    ]
    return {
        "settings": settings,
        "results": results,
        "ratio_far_to_near": {n: {"init": _ratio(r["init"]), "trained": _ratio(r["trained"])}
                              for n, r in results.items()},
        "steps_to_fall_1e6": {n: {"init": _steps_to_fall(r["init"]), "trained": _steps_to_fall(r["trained"])}
                              for n, r in results.items()},
        "figures": [figure],
        "findings": findings,
    }


def _steps_to_fall(norms: list[float], factor: float = 1e-6):
    """First distance at which the gradient is below ``factor`` times the one at the last step (None: never)."""
    return next((d for d, v in enumerate(norms) if v < factor * norms[0]), None)


def _shown(steps) -> str:
    return f"within {steps} steps" if steps is not None else "not at all within the sequence"


def _ratio_text(norms: list[float]) -> str:
    ratio = _ratio(norms)
    return f"{ratio:.1e}" if ratio > 0 else "exactly 0 (below float32's range)"


def _ratio(norms: list[float]) -> float:
    # 0.0 when nothing reaches the last step at all (JSON has no NaN).
    return norms[-1] / norms[0] if norms[0] > 0 else 0.0


def _plot(results: dict, path: Path) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, constrained_layout=True)
    for ax, phase in zip(axes, ("init", "trained")):
        for name, r in results.items():
            norms = [max(v, 1e-30) for v in r[phase]]
            ax.plot(range(len(norms)), norms, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("distance T - t (steps back from the loss)")
        ax.set_title("at initialization" if phase == "init" else "after training on the memory task")
    axes[0].set_ylabel("mean ||dL/dh_t||")
    axes[0].legend(fontsize=8)
    return save_figure(fig, path)
