"""rnnkit.nn must behave exactly like torch.nn.RNN / LSTM / GRU.

Most tests run the same weights, inputs and initial states through ours and
torch's module and require outputs, final states and the gradients of a random
linear loss (w.r.t. the input, h_0 and every parameter) to agree within 1e-5.
"""

from __future__ import annotations

import itertools
import warnings
import zlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import (
    PackedSequence,
    pack_padded_sequence,
    pack_sequence,
    pad_packed_sequence,
)

from rnnkit import nn as rk

CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # These tensors are tiny: intra-op threads only add spin-wait overhead,
    # which on a busy 2-core box made this file several times slower.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
TOL = dict(rtol=1e-5, atol=1e-5)


def make(cell: str, impl: str, input_size: int, hidden_size: int, **kw) -> torch.nn.Module:
    """Build ``cell`` from torch (``impl='torch'``) or rnnkit (``impl='ours'``)."""
    lib = torch.nn if impl == "torch" else rk
    if cell.startswith("rnn_"):
        return lib.RNN(input_size, hidden_size, nonlinearity=cell[4:], **kw)
    return {"lstm": lib.LSTM, "gru": lib.GRU}[cell](input_size, hidden_size, **kw)


def pair(cell: str, input_size: int, hidden_size: int, weights_from: str = "torch", **kw):
    """(torch module, our module) sharing weights loaded via ``state_dict``."""
    ref = make(cell, "torch", input_size, hidden_size, **kw)
    ours = make(cell, "ours", input_size, hidden_size, **kw)
    if weights_from == "torch":
        ours.load_state_dict(ref.state_dict())
    else:
        ref.load_state_dict(ours.state_dict())
    return ref, ours


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def run(module, x, hx=None, lengths=None, batch_first=False, enforce_sorted=False):
    """Forward + backward of a fixed random linear loss.

    Returns a dict with the output (packed ``data`` for packed input), its
    packing metadata, the final states and the gradients of the input, of every
    ``hx`` tensor and of every parameter.
    """
    x = x.detach().clone().requires_grad_(True)
    hx_leaves = None
    if hx is not None:
        hx_leaves = tuple(h.detach().clone().requires_grad_(True) for h in as_tuple(hx))
        hx = hx_leaves if isinstance(hx, tuple) else hx_leaves[0]
    inp = x
    if lengths is not None:
        inp = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
    out, final = module(inp, hx)
    res = {}
    if lengths is not None:
        assert isinstance(out, PackedSequence)
        res["batch_sizes"] = out.batch_sizes
        res["sorted_indices"] = out.sorted_indices
        res["unsorted_indices"] = out.unsorted_indices
        out = out.data
    res["output"] = out
    for i, s in enumerate(as_tuple(final)):
        res[f"final{i}"] = s
    # The same weights for both modules: a fresh generator, same draw order.
    g = torch.Generator().manual_seed(1234)
    loss = sum(
        (t * torch.randn(t.shape, generator=g).to(t)).sum() for t in [out, *as_tuple(final)]
    )
    loss.backward()
    res["grad_input"] = x.grad
    for i, h in enumerate(hx_leaves or ()):
        res[f"grad_hx{i}"] = h.grad
    for name, p in module.named_parameters():
        res[f"grad_{name}"] = p.grad
    return res


def assert_same(ref: dict, ours: dict) -> None:
    assert ref.keys() == ours.keys()
    for key in ref:
        a, b = ref[key], ours[key]
        if a is None or b is None:
            assert a is None and b is None, key
        elif a.dtype in (torch.int64, torch.int32):
            assert torch.equal(a, b), key
        else:
            assert a.shape == b.shape, key
            torch.testing.assert_close(b, a, **TOL, msg=lambda m: f"{key}: {m}")


def random_case(seed: int, num_layers: int, bidirectional: bool, batch_first: bool, packed: bool, with_h0: bool, cell: str):
    """Random sizes, input, lengths and h_0 for one configuration."""
    gen = torch.Generator().manual_seed(seed)

    def randint(lo, hi):
        return int(torch.randint(lo, hi + 1, (), generator=gen))

    input_size, hidden, batch, seq = randint(1, 6), randint(1, 7), randint(2, 5), randint(2, 7)
    x = torch.randn((batch, seq, input_size) if batch_first else (seq, batch, input_size), generator=gen)
    lengths = None
    if packed:
        lengths = torch.randint(1, seq + 1, (batch,), generator=gen)
        # Force genuinely variable, unsorted lengths.
        lengths[0], lengths[1] = 1, seq
        lengths = lengths[torch.randperm(batch, generator=gen)]
    hx = None
    if with_h0:
        shape = (num_layers * (2 if bidirectional else 1), batch, hidden)
        hx = torch.randn(shape, generator=gen)
        if cell == "lstm":
            hx = (hx, torch.randn(shape, generator=gen))
    return input_size, hidden, x, lengths, hx


GRID = list(
    itertools.product(CELLS, [1, 2], [False, True], [False, True], [False, True], [False, True])
)


@pytest.mark.parametrize(
    "cell,num_layers,bidirectional,batch_first,packed,with_h0",
    GRID,
    ids=[
        f"{c}-L{l}-{'bi' if b else 'uni'}-{'bf' if f else 'tf'}-{'packed' if p else 'tensor'}-{'h0' if h else 'noh0'}"
        for c, l, b, f, p, h in GRID
    ],
)
def test_matches_torch(cell, num_layers, bidirectional, batch_first, packed, with_h0):
    seed = zlib.crc32(repr((cell, num_layers, bidirectional, batch_first, packed, with_h0)).encode())
    torch.manual_seed(seed)
    input_size, hidden, x, lengths, hx = random_case(
        seed, num_layers, bidirectional, batch_first, packed, with_h0, cell
    )
    # Alternate the direction weights travel in, so both load paths are covered
    # across the grid.
    weights_from = "torch" if seed % 2 else "ours"
    ref, ours = pair(
        cell,
        input_size,
        hidden,
        weights_from=weights_from,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
    )
    expected = run(ref, x, hx, lengths, batch_first)
    got = run(ours, x, hx, lengths, batch_first)
    assert_same(expected, got)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    cell=st.sampled_from(CELLS),
    num_layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    bias=st.booleans(),
    batch_first=st.booleans(),
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    mode=st.sampled_from(["tensor", "unsorted", "sorted"]),
    with_h0=st.booleans(),
    input_size=st.integers(1, 5),
    hidden=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_matches_torch_hypothesis(
    cell, num_layers, bidirectional, bias, batch_first, lengths, mode, with_h0, input_size, hidden, seed
):
    """Random sizes, bias on/off, up to 3 layers, equal or tied lengths, sorted packing."""
    gen = torch.Generator().manual_seed(seed)
    batch, seq = len(lengths), max(lengths)
    x = torch.randn((batch, seq, input_size) if batch_first else (seq, batch, input_size), generator=gen)
    lengths_t = torch.tensor(lengths)
    if mode == "tensor":
        lengths_t = None
    elif mode == "sorted":
        lengths_t = lengths_t.sort(descending=True).values
    hx = None
    if with_h0:
        shape = (num_layers * (2 if bidirectional else 1), batch, hidden)
        hx = torch.randn(shape, generator=gen)
        if cell == "lstm":
            hx = (hx, torch.randn(shape, generator=gen))
    ref, ours = pair(
        cell, input_size, hidden, num_layers=num_layers, bias=bias,
        bidirectional=bidirectional, batch_first=batch_first,
    )
    sorted_ = mode == "sorted"
    assert_same(
        run(ref, x, hx, lengths_t, batch_first, enforce_sorted=sorted_),
        run(ours, x, hx, lengths_t, batch_first, enforce_sorted=sorted_),
    )


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    cell=st.sampled_from(CELLS),
    lengths=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_packed_batch_equals_each_sequence_alone(cell, lengths, seed):
    """Independent of torch: packing must not let sequences see each other's
    padding, and the reverse direction must start at each sequence's own end."""
    torch.manual_seed(seed)
    model = make(cell, "ours", 3, 4, num_layers=2, bidirectional=True)
    seqs = [torch.randn(n, 3) for n in lengths]
    out, final = model(pack_sequence(seqs, enforce_sorted=False))
    padded, _ = pad_packed_sequence(out, batch_first=True)
    for b, s in enumerate(seqs):
        alone_out, alone_final = model(s)
        torch.testing.assert_close(padded[b, : len(s)], alone_out, **TOL)
        for f, a in zip(as_tuple(final), as_tuple(alone_final)):
            torch.testing.assert_close(f[:, b], a, **TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_internal_padded_output_is_zero_past_lengths(cell):
    """The padded output the layer loop produces is zero past each length, as
    torch's pad_packed_sequence would give (not observable through the public
    packed output, hence the private call)."""
    torch.manual_seed(0)
    model = make(cell, "ours", 3, 4, num_layers=2, bidirectional=True)
    lengths = torch.tensor([5, 3, 1])
    x = torch.randn(5, 3, 3)
    states = model._initial_states(3, x, None)
    out, _ = model._run(x, states, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.all(out[n:, b] == 0)
        assert torch.all(out[:n, b].abs().sum(-1) > 0)


@pytest.mark.parametrize("cell", CELLS)
def test_packed_equal_lengths(cell):
    """All sequences full length takes the unmasked path; still identical to torch."""
    torch.manual_seed(0)
    x = torch.randn(5, 3, 4)
    lengths = torch.tensor([5, 5, 5])
    ref, ours = pair(cell, 4, 3, num_layers=2, bidirectional=True)
    assert_same(run(ref, x, None, lengths), run(ours, x, None, lengths))


# ---- parameters and state_dict ---------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_parameters_and_init_match_torch(cell, bidirectional, bias):
    kw = dict(num_layers=2, bidirectional=bidirectional, bias=bias)
    torch.manual_seed(7)
    ref = make(cell, "torch", 3, 5, **kw)
    torch.manual_seed(7)
    ours = make(cell, "ours", 3, 5, **kw)
    ref_params = dict(ref.named_parameters())
    our_params = dict(ours.named_parameters())
    # Same names in the same order with the same shapes, and the same draws
    # from the same seed (so the init distribution and order are torch's).
    assert list(our_params) == list(ref_params)
    for name in ref_params:
        assert our_params[name].shape == ref_params[name].shape
        assert torch.equal(our_params[name], ref_params[name]), name
    bound = 1 / 5**0.5
    assert all(p.abs().max() <= bound for p in ours.parameters())
    # strict loads both ways
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    assert [[p.shape for p in group] for group in ours.all_weights] == [
        [p.shape for p in group] for group in ref.all_weights
    ]


def test_repr_and_attributes():
    m = rk.LSTM(3, 5, num_layers=2, batch_first=True, dropout=0.5, bidirectional=True)
    assert repr(m) == "LSTM(3, 5, num_layers=2, batch_first=True, dropout=0.5, bidirectional=True)"
    assert rk.RNN is rk.ElmanRNN
    assert rk.RNN(2, 3, nonlinearity="relu").nonlinearity == "relu"
    assert (m.input_size, m.hidden_size, m.num_layers, m.proj_size) == (3, 5, 2, 0)


def test_float64_and_dtype_argument():
    ref, ours = pair("gru", 3, 4, num_layers=2, bidirectional=True)
    ref, ours = ref.double(), ours.double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    assert_same(run(ref, x), run(ours, x))
    assert rk.LSTM(3, 4, dtype=torch.float64).weight_hh_l0.dtype == torch.float64


# ---- unbatched input ---------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched(cell, with_h0, batch_first):
    torch.manual_seed(3)
    ref, ours = pair(cell, 3, 4, num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn(7, 3)
    hx = None
    if with_h0:
        hx = torch.randn(4, 4)
        if cell == "lstm":
            hx = (hx, torch.randn(4, 4))
    expected, got = run(ref, x, hx), run(ours, x, hx)
    assert got["output"].shape == (7, 8)
    assert got["final0"].shape == (4, 4)
    assert_same(expected, got)


# ---- dropout -----------------------------------------------------------------


def _warnings_of(factory):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        factory()
    return caught


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_single_layer_warns_like_torch(cell):
    ours = _warnings_of(lambda: make(cell, "ours", 3, 4, dropout=0.3))
    ref = _warnings_of(lambda: make(cell, "torch", 3, 4, dropout=0.3))
    assert len(ours) == 1 and len(ref) == 1
    assert ours[0].category is UserWarning
    assert str(ours[0].message) == str(ref[0].message)
    # Points at the caller's line, not at rnnkit's internals.
    assert ours[0].filename == __file__


def test_dropout_no_warning_when_meaningful():
    assert _warnings_of(lambda: rk.LSTM(3, 4, num_layers=2, dropout=0.3)) == []
    assert _warnings_of(lambda: rk.GRU(3, 4, dropout=0.0)) == []


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_between_layers_train_only(cell):
    torch.manual_seed(0)
    ref, ours = pair(cell, 3, 6, num_layers=2, dropout=0.5, bidirectional=True)
    x = torch.randn(5, 4, 3)
    # train mode: random masks, so two calls differ and both differ from eval
    ours.train()
    a, _ = ours(x)
    b, _ = ours(x)
    assert not torch.allclose(a, b)
    ours.eval(), ref.eval()
    c, _ = ours(x)
    d, _ = ours(x)
    assert torch.equal(c, d)
    assert not torch.allclose(a, c)
    assert_same(run(ref, x), run(ours, x))


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_one_zeroes_layer_input_not_last_output(cell):
    """p=1 drops everything between layers: deterministic, so comparable with
    torch in train mode; the input can then only reach the output through
    the first layer's h_n, and the last layer's output is not dropped."""
    torch.manual_seed(0)
    ref, ours = pair(cell, 3, 4, num_layers=2, dropout=1.0)
    ref.train(), ours.train()
    x = torch.randn(5, 2, 3)
    got = run(ours, x)
    assert_same(run(ref, x), got)
    assert got["output"].abs().sum() > 0
    out, _ = ours(x.requires_grad_(True))
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.all(grad == 0)


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_single_layer_is_noop(cell):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = make(cell, "ours", 3, 4, dropout=0.9)
    ours.train()
    x = torch.randn(5, 2, 3)
    a, _ = ours(x)
    ours.eval()
    b, _ = ours(x)
    assert torch.equal(a, b)


# ---- argument validation -------------------------------------------------------


def test_proj_size_rejected():
    with pytest.raises(ValueError, match="proj_size"):
        rk.LSTM(3, 4, proj_size=2)
    rk.LSTM(3, 4, proj_size=0)  # the default stays accepted


@pytest.mark.parametrize(
    "factory,exc,match",
    [
        (lambda: rk.LSTM(3, 0), ValueError, "hidden_size"),
        (lambda: rk.GRU(3, -1), ValueError, "hidden_size"),
        (lambda: rk.RNN(0, 4), ValueError, "input_size"),
        (lambda: rk.LSTM(3, 4, num_layers=0), ValueError, "num_layers"),
        (lambda: rk.GRU(3, 4, dropout=-0.1), ValueError, "dropout"),
        (lambda: rk.GRU(3, 4, num_layers=2, dropout=1.5), ValueError, "dropout"),
        (lambda: rk.LSTM(3, 4, num_layers=2, dropout=True), ValueError, "dropout"),
        (lambda: rk.RNN(3, 4, nonlinearity="sigmoid"), ValueError, "nonlinearity"),
        (lambda: rk.RNN(3, 4, bias=1), TypeError, "bias"),
        (lambda: rk.GRU(3, 4.0), TypeError, "hidden_size"),
        (lambda: rk.GRU(3, 4, batch_first="yes"), TypeError, "batch_first"),
    ],
)
def test_bad_constructor_args(factory, exc, match):
    with pytest.raises(exc, match=match):
        factory()


def test_bad_forward_args():
    m = rk.LSTM(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    with pytest.raises(RuntimeError, match="input_size"):
        m(torch.randn(5, 2, 7))
    with pytest.raises(ValueError, match="2D or 3D"):
        m(torch.randn(5, 2, 3, 1))
    with pytest.raises(RuntimeError, match="Expected hidden size"):
        m(x, (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(TypeError, match="tuple"):
        m(x, torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match="dtype"):
        m(x.double())
    with pytest.raises(RuntimeError, match="sequence length"):
        m(torch.randn(0, 2, 3))
    # Packed: h_0 for a larger batch must be rejected, not silently sliced by
    # the sorting permutation.
    packed = pack_padded_sequence(x, torch.tensor([5, 3]), enforce_sorted=False)
    with pytest.raises(RuntimeError, match="Expected hidden size"):
        m(packed, (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)))
    with pytest.raises(RuntimeError, match="3-D"):
        rk.GRU(3, 4)(x, torch.zeros(1, 4))


# ---- GPU ------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("cudnn", [False, True])
def test_cuda_matches_torch(cell, packed, cudnn):
    """On the GPU, against torch's native CUDA kernels (cuDNN off) at 1e-5 and
    against cuDNN at a looser tolerance: measured against float64 on an H100,
    cuDNN's float32 gradients were off by up to ~1e-4 (ours: ~3e-6) even with
    TF32 disabled."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        torch.manual_seed(0)
        ref, ours = pair(cell, 5, 8, num_layers=2, bidirectional=True, batch_first=True)
        ref, ours = ref.cuda(), ours.cuda()
        x = torch.randn(6, 9, 5, device="cuda")
        lengths = torch.tensor([9, 2, 5, 9, 1, 7]) if packed else None
        hx = torch.randn(4, 6, 8, device="cuda")
        if cell == "lstm":
            hx = (hx, torch.randn(4, 6, 8, device="cuda"))
        with torch.backends.cudnn.flags(enabled=cudnn, allow_tf32=False):
            expected = run(ref, x, hx, lengths, batch_first=True)
        got = run(ours, x, hx, lengths, batch_first=True)
        assert got["output"].is_cuda
        if cudnn:
            assert expected.keys() == got.keys()
            for key in expected:
                if expected[key] is not None and expected[key].is_floating_point():
                    torch.testing.assert_close(got[key], expected[key], rtol=1e-3, atol=5e-4)
        else:
            assert_same(expected, got)
        assert make(cell, "ours", 5, 8, device="cuda").weight_ih_l0.is_cuda
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
