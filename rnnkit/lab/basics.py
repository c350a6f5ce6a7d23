"""The study notes' first example: "hello" one-hot encoded through ``nn.RNN``.

Three words over the alphabet {h, e, l, o}, each letter a one-hot vector of
size 4, go through an RNN with hidden size 2. The experiment prints the shapes
of ``output`` and ``h_n`` with ``batch_first`` on and off, checks that the last
output step *is* ``h_n`` for a one-layer unidirectional RNN (and where that
stops being true: the backward half of a bidirectional RNN ends at step 0),
and runs rnnkit's from-scratch :class:`rnnkit.nn.ElmanRNN` on the same weights.
"""

from __future__ import annotations

from pathlib import Path

from . import pyplot, save_figure, seeded

ALPHABET = ["h", "e", "l", "o"]
WORDS = ["hello", "eolll", "lleel"]


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
    return {
        "alphabet": ALPHABET,
        "words": WORDS,
        "shapes": shapes,
        "claims": claims,
        "scratch_vs_torch_max_abs_diff": {"output": diff_out, "h_n": diff_h},
        "outputs": {w: [[round(v, 4) for v in step] for step in out_bf[i].tolist()] for i, w in enumerate(WORDS)},
        "figures": [figure],
        "findings": [
            f"input (batch, seq, feature) = {tuple(x.shape)}; output = {tuple(out_bf.shape)} "
            f"(batch, seq, hidden); h_n = {tuple(h_bf.shape)} (layers x directions, batch, hidden).",
            "batch_first=False swaps the first two axes of input and output; h_n is batch-second either way.",
            "For one unidirectional layer the last output step is h_n; for a bidirectional RNN the "
            "backward half of h_n is the output at step 0, not at the last step.",
            f"rnnkit's from-scratch ElmanRNN matches torch.nn.RNN to {max(diff_out, diff_h):.1e}.",
        ],
        "all_as_expected": all(c["observed"] == c["expected"] for c in claims),
    }


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
