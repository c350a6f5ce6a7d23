"""The study notes' first example: "hello" one-hot encoded through ``nn.RNN``.

Three words over the alphabet {h, e, l, o}, each letter a one-hot vector of
size 4, go through an RNN with hidden size 2. The experiment prints the shapes
of ``output`` and ``h_n`` with ``batch_first`` on and off, checks that the last
output step *is* ``h_n`` for a one-layer unidirectional RNN (and where that
stops being true: the backward half of a bidirectional RNN ends at step 0),
and runs rnnkit's from-scratch :class:`rnnkit.nn.ElmanRNN` on the same weights.

Then study note 001's claim that the hidden size must equal the number of classes
(3 emotions -> hidden size 3), by experiment. The task: which of h, e, l occurs most
in a random string over {h, e, l, o} (3 classes; o is noise). Each hidden size gets
an RNN followed by a linear head ``hidden -> 3``, the same training budget, and a
test set; beside them, the note's own design, hidden size 3 read directly as the
three class scores. The head maps any hidden size to the classes: what the hidden
size changes is how much the network can count and remember, not what it can output.
Read directly, a tanh state bounds every logit to [-1, 1], so no class probability can
pass ``e / (e + 2/e) = 0.79`` and the loss cannot fall below ``-log 0.79 = 0.24``.
"""

from __future__ import annotations

import math
from pathlib import Path

from . import finish_accuracy_axes, pyplot, save_figure, seeded

ALPHABET = ["h", "e", "l", "o"]
WORDS = ["hello", "eolll", "lleel"]
CLASSES = ["h", "e", "l"]  # the three "emotions": the letter that occurs most
HIDDEN_FULL = dict(sizes=[1, 2, 3, 8, 32], steps=1500, batch=64, lengths=(5, 12), test=2000)
HIDDEN_QUICK = dict(sizes=[1, 8], steps=150, batch=64, lengths=(5, 12), test=500)


def one_hot(words=WORDS, alphabet=ALPHABET):
    """``(batch, seq, len(alphabet))`` float tensor: one row per word, one column per letter."""
    import torch

    index = torch.tensor([[alphabet.index(c) for c in w] for w in words])
    return torch.nn.functional.one_hot(index, len(alphabet)).float()


def run(out: Path, quick: bool = False, seed: int = 0, log=print) -> dict:
    import torch
    from torch import nn

    from ..nn import ElmanRNN

    seeded(seed)
    x = one_hot()  # (3, 5, 4)
    rnn_bf = nn.RNN(input_size=4, hidden_size=2, batch_first=True)
    rnn_sf = nn.RNN(input_size=4, hidden_size=2, batch_first=False)
    rnn_sf.load_state_dict(rnn_bf.state_dict())
    with torch.no_grad():
        out_bf, h_bf = rnn_bf(x)
        out_sf, h_sf = rnn_sf(x.transpose(0, 1))
    shapes = {
        "input (batch_first=True)": list(x.shape),
        "output (batch_first=True)": list(out_bf.shape),
        "h_n (batch_first=True)": list(h_bf.shape),
        "input (batch_first=False)": list(x.transpose(0, 1).shape),
        "output (batch_first=False)": list(out_sf.shape),
        "h_n (batch_first=False)": list(h_sf.shape),
    }
    for k, v in shapes.items():
        log(f"basics: {k:28s} {tuple(v)}")

    # (claim, what theory says, what the tensors say)
    claims = []

    def check(claim: str, expected: bool, observed: bool) -> None:
        claims.append({"claim": claim, "expected": expected, "observed": bool(observed)})

    check("last output step == h_n (1 layer, unidirectional)", True, _same(out_bf[:, -1], h_bf[0]))
    check("batch_first only transposes the output", True, _same(out_bf, out_sf.transpose(0, 1)))
    check("h_n is the same with batch_first on or off", True, _same(h_bf, h_sf))

    bi = nn.RNN(4, 2, batch_first=True, bidirectional=True)
    with torch.no_grad():
        out_bi, h_bi = bi(x)
    # Output halves: [..., :H] forward, [..., H:] backward; the backward direction ends at t = 0.
    check("bidirectional: forward half of the last output == h_n[0]", True, _same(out_bi[:, -1, :2], h_bi[0]))
    check("bidirectional: backward half of the last output == h_n[1]", False, _same(out_bi[:, -1, 2:], h_bi[1]))
    check("bidirectional: backward half of the FIRST output == h_n[1]", True, _same(out_bi[:, 0, 2:], h_bi[1]))
    stacked = nn.RNN(4, 2, num_layers=2, batch_first=True)
    with torch.no_grad():
        out_st, h_st = stacked(x)
    check("2 layers: h_n is (num_layers, batch, hidden) = (2, 3, 2)", True, list(h_st.shape) == [2, 3, 2])
    check("2 layers: last output step == h_n[-1] (the top layer)", True, _same(out_st[:, -1], h_st[-1]))

    scratch = ElmanRNN(4, 2, batch_first=True)
    scratch.load_state_dict(rnn_bf.state_dict())
    with torch.no_grad():
        out_scratch, h_scratch = scratch(x)
    diff_out = float((out_scratch - out_bf).abs().max())
    diff_h = float((h_scratch - h_bf).abs().max())
    check("rnnkit.nn.ElmanRNN == torch.nn.RNN on the same weights", True, diff_out < 1e-6 and diff_h < 1e-6)
    for c in claims:
        verdict = "true " if c["observed"] else "false"
        surprise = "" if c["observed"] == c["expected"] else "   <-- NOT as expected"
        log(f"basics: {verdict} {c['claim']}{surprise}")
    log(f"basics: largest |rnnkit - torch| difference: output {diff_out:.2e}, h_n {diff_h:.2e}")

    figure = _plot(x, out_bf, out / "basics.png")
    hidden = hidden_size_study(HIDDEN_QUICK if quick else HIDDEN_FULL, seed, log)
    hidden_figure = _plot_hidden(hidden, out / "basics_hidden.png")
    best = max(r["test_accuracy"] for r in hidden["rows"] if r["head"])
    direct = next(r for r in hidden["rows"] if not r["head"])
    widest = max((r for r in hidden["rows"] if r["head"]), key=lambda r: r["hidden_size"])
    return {
        "alphabet": ALPHABET,
        "words": WORDS,
        "shapes": shapes,
        "claims": claims,
        "scratch_vs_torch_max_abs_diff": {"output": diff_out, "h_n": diff_h},
        "outputs": {w: [[round(v, 4) for v in step] for step in out_bf[i].tolist()] for i, w in enumerate(WORDS)},
        "hidden_size_study": hidden,
        "figures": [figure, hidden_figure],
        "findings": [
            f"input (batch, seq, feature) = {tuple(x.shape)}; output = {tuple(out_bf.shape)} "
            f"(batch, seq, hidden); h_n = {tuple(h_bf.shape)} (layers x directions, batch, hidden).",
            "batch_first=False swaps the first two axes of input and output; h_n is batch-second either way.",
            "For one unidirectional layer the last output step is h_n; for a bidirectional RNN the "
            "backward half of h_n is the output at step 0, not at the last step.",
            f"rnnkit's from-scratch ElmanRNN matches torch.nn.RNN to {max(diff_out, diff_h):.1e}.",
            "The hidden size need not equal the number of classes: with a linear head to the 3 classes, "
            + ", ".join(f"hidden {r['hidden_size']} reaches {r['test_accuracy']:.3f}"
                        for r in hidden["rows"] if r["head"])
            + f" test accuracy (best {best:.3f}).",
            f"Hidden size 3 read directly as the class scores (the note's design): {direct['test_accuracy']:.3f} "
            f"accuracy, final loss {direct['final_loss']:.3f} against {widest['final_loss']:.3f} for hidden "
            f"{widest['hidden_size']} with a head; "
            f"tanh caps each logit at 1, so no probability passes {hidden['probability_cap']:.3f} "
            f"and the loss stays above {-math.log(hidden['probability_cap']):.3f}.",
        ],
        "all_as_expected": all(c["observed"] == c["expected"] for c in claims),
    }


def counting_task(n: int, generator, lengths=(5, 12)):
    """One-hot strings over {h, e, l, o} ``(n, T, 4)`` (all of one length T drawn from ``lengths``) and
    the label ``(n,)``: which of h, e, l occurs most; strings with a tie are drawn again."""
    import torch

    length = int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=generator))
    rows, labels = [], []
    while len(rows) < n:
        ids = torch.randint(0, len(ALPHABET), (2 * n, length), generator=generator)
        counts = torch.stack([(ids == i).sum(1) for i in range(len(CLASSES))], 1)
        top = counts.max(1).values
        unique = (counts == top[:, None]).sum(1) == 1
        rows.append(ids[unique])
        labels.append(counts[unique].argmax(1))
    ids, labels = torch.cat(rows)[:n], torch.cat(labels)[:n]
    return torch.nn.functional.one_hot(ids, len(ALPHABET)).float(), labels


class _Classifier:
    """``nn.RNN(4, hidden)`` then, with ``head``, ``nn.Linear(hidden, 3)``; without, ``h_n`` are the logits."""

    def __init__(self, hidden: int, head: bool):
        from torch import nn

        self.rnn = nn.RNN(len(ALPHABET), hidden, batch_first=True)
        self.head = nn.Linear(hidden, len(CLASSES)) if head else None
        self.modules = nn.ModuleList([self.rnn] + ([self.head] if head else []))

    def __call__(self, x):
        h_n = self.rnn(x)[1][0]
        return self.head(h_n) if self.head is not None else h_n


def hidden_size_study(settings: dict, seed: int, log=print) -> dict:
    """Train the counting task at each hidden size (with a head), and at 3 without one."""
    import torch

    rows = []
    for hidden, head in [(h, True) for h in settings["sizes"]] + [(len(CLASSES), False)]:
        generator = seeded(seed * 1000 + hidden)
        model = _Classifier(hidden, head)
        optimizer = torch.optim.Adam(model.modules.parameters(), lr=1e-2)
        losses = []
        for _ in range(settings["steps"]):
            x, y = counting_task(settings["batch"], generator, settings["lengths"])
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        correct, total, top_probability = 0, 0, 0.0
        with torch.no_grad():
            for _ in range(max(1, settings["test"] // 500)):
                x, y = counting_task(500, generator, settings["lengths"])
                probs = torch.softmax(model(x), 1)
                correct += int((probs.argmax(1) == y).sum())
                total += len(y)
                top_probability = max(top_probability, float(probs.max()))
        rows.append({"hidden_size": hidden, "head": head,
                     "parameters": sum(p.numel() for p in model.modules.parameters()),
                     "test_accuracy": round(correct / total, 4),
                     "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
                     "highest_probability": round(top_probability, 4)})
        log(f"basics: hidden {hidden:3d} {'+ linear head' if head else 'read directly'}: test accuracy "
            f"{rows[-1]['test_accuracy']:.3f}, final loss {rows[-1]['final_loss']:.3f}, "
            f"highest probability {rows[-1]['highest_probability']:.3f}")
    cap = math.e / (math.e + 2 / math.e)
    return {"task": "which of h, e, l occurs most in a random string over h, e, l, o", "classes": CLASSES,
            "settings": settings, "rows": rows, "probability_cap": round(cap, 4)}


def _plot_hidden(study: dict, path: Path) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    heads = [r for r in study["rows"] if r["head"]]
    ax.plot([r["hidden_size"] for r in heads], [r["test_accuracy"] for r in heads], "o-",
            label="RNN(hidden) + Linear(hidden, 3)")
    direct = [r for r in study["rows"] if not r["head"]]
    ax.plot([r["hidden_size"] for r in direct], [r["test_accuracy"] for r in direct], "s", color="C3",
            markersize=9, label="hidden 3 read directly (note 001)")
    finish_accuracy_axes(ax, [r["hidden_size"] for r in heads], 1 / len(CLASSES), "hidden size (3 classes)",
                         "The hidden size need not equal the number of classes", base=2)
    return save_figure(fig, path)


def _same(a, b) -> bool:
    import torch

    return bool(a.shape == b.shape and torch.allclose(a, b, atol=1e-6))


def _plot(x, outputs, path: Path) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(2, len(WORDS), figsize=(3.3 * len(WORDS), 5.2), constrained_layout=True)
    for i, word in enumerate(WORDS):
        axes[0, i].imshow(x[i].T.numpy(), cmap="Greys", vmin=0, vmax=1, aspect="auto")
        axes[0, i].set_title(f"one-hot '{word}'")
        axes[0, i].set_yticks(range(len(ALPHABET)), ALPHABET)
        axes[0, i].set_xticks(range(len(word)), list(word))
        im = axes[1, i].imshow(outputs[i].T.numpy(), cmap="coolwarm", vmin=-1, vmax=1, aspect="auto")
        axes[1, i].set_title("RNN output h_t")
        axes[1, i].set_yticks([0, 1], ["h[0]", "h[1]"])
        axes[1, i].set_xticks(range(len(word)), list(word))
    fig.colorbar(im, ax=axes[1, :].tolist(), shrink=0.8)
    fig.suptitle("input (batch=3, seq=5, feature=4) -> output (3, 5, hidden=2)")
    return save_figure(fig, path)
