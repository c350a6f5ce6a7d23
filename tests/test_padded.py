"""The padded fast path must compute exactly what packing computes: outputs, pooled
features, logits and every gradient, for every cell, depth, direction and pooling."""

import itertools
import os

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.config import POOLINGS
from rnnkit.errors import RnnkitError
from rnnkit.model import Dropout, SequenceClassifier
from rnnkit import padded
from rnnkit.padded import FusedLayer, TwoDirections, last_state, run_padded, valid_mask

TOL = dict(atol=1e-5, rtol=0)


def ragged(batch=6, max_len=9, vocab=30, seed=0):
    """ids with padding zeroed and lengths that include 1 and max_len, in no particular order."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (batch,), generator=g)
    lengths[1], lengths[3] = max_len, 1
    ids = torch.randint(4, vocab, (batch, max_len), generator=g)
    ids[torch.arange(max_len)[None] >= lengths[:, None]] = 0
    return ids, lengths


LAYERS = [(nn.RNN, {"nonlinearity": "tanh"}), (nn.RNN, {"nonlinearity": "relu"}), (nn.LSTM, {}), (nn.GRU, {}),
          (nn.LSTM, {"proj_size": 3})]


@pytest.mark.parametrize("kernel", ["native", "fused"])
@pytest.mark.parametrize("layer,kwargs", LAYERS, ids=["rnn_tanh", "rnn_relu", "lstm", "gru", "lstm_proj"])
def test_layer_outputs_and_gradients_equal_packed(layer, kwargs, kernel):
    if kernel == "fused" and kwargs.get("proj_size"):
        rnn = layer(5, 7, batch_first=True, **kwargs)
        with pytest.raises(RnnkitError, match="kernel=fused has no LSTM projections"):
            run_padded(rnn, torch.randn(2, 3, 5), torch.tensor([3, 1]), kernel)
        return
    for num_layers, bidirectional in itertools.product((1, 2), (False, True)):
        torch.manual_seed(0)
        rnn = layer(5, 7, num_layers=num_layers, bidirectional=bidirectional, batch_first=True, **kwargs)
        _, lengths = ragged()
        x = torch.randn(len(lengths), int(lengths.max()), 5, requires_grad=True)
        mask = valid_mask(lengths, x.shape[1], x.device)[..., None]
        width = kwargs.get("proj_size") or rnn.hidden_size
        weight = torch.randn(x.shape[0], x.shape[1], width * (1 + bidirectional))

        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        ref, h_n = rnn(packed)
        ref = pad_packed_sequence(ref, batch_first=True)[0]
        ref_grads = torch.autograd.grad((ref * weight).sum(), [x, *rnn.parameters()])

        out = run_padded(rnn, x, lengths, kernel).masked_fill(~mask, 0.0)
        grads = torch.autograd.grad((out * weight).sum(), [x, *rnn.parameters()])

        where = f"{layer.__name__}{kwargs} layers={num_layers} bidirectional={bidirectional} {kernel}"
        torch.testing.assert_close(out, ref, **TOL, msg=lambda m: f"outputs, {where}: {m}")
        for got, want in zip(grads, ref_grads):
            torch.testing.assert_close(got, want, **TOL, msg=lambda m: f"gradients, {where}: {m}")
        h_n = h_n[0] if isinstance(h_n, tuple) else h_n
        top = torch.cat([h_n[-2], h_n[-1]], -1) if bidirectional else h_n[-1]
        torch.testing.assert_close(last_state(out, lengths, bidirectional), top, **TOL)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_classifier_features_logits_and_gradients_equal_packed(cell, pooling):
    ids, lengths = ragged(batch=7, max_len=11)
    y = torch.randint(0, 3, (7,), generator=torch.Generator().manual_seed(2))
    for num_layers, bidirectional in itertools.product((1, 2), (False, True)):
        results = {}
        for kernel in ("packed", "native", "fused"):
            torch.manual_seed(0)
            model = SequenceClassifier(30, 3, cell=cell, embedding_dim=6, hidden_size=5, head_hidden=4,
                                       num_layers=num_layers, bidirectional=bidirectional, pooling=pooling,
                                       embedding_dropout=0.0, head_dropout=0.0, kernel=kernel)
            features = model.encode(ids, lengths)
            logits = model(ids, lengths)
            nn.functional.cross_entropy(logits, y).backward()
            results[kernel] = (features, logits, [p.grad for p in model.parameters()])
        ref = results.pop("packed")
        for kernel, (features, logits, grads) in results.items():
            where = f"{cell} {pooling} layers={num_layers} bidirectional={bidirectional} {kernel}"
            torch.testing.assert_close(features, ref[0], **TOL, msg=lambda m: f"features, {where}: {m}")
            torch.testing.assert_close(logits, ref[1], **TOL, msg=lambda m: f"logits, {where}: {m}")
            for got, want in zip(grads, ref[2]):
                torch.testing.assert_close(got, want, **TOL, msg=lambda m: f"gradients, {where}: {m}")


@pytest.mark.parametrize("backend", ["torch", "scratch"])
def test_lstm_projection_classifier_padded_equals_packed(backend):
    """proj_size > 0 on the padded path (torch's kernel with W_hr) and on the packed one."""
    ids, lengths = ragged(batch=7, max_len=11)
    y = torch.randint(0, 3, (7,), generator=torch.Generator().manual_seed(2))
    for pooling, bidirectional in (("last", True), ("maxmean", False), ("attention", True)):
        results = {}
        for kernel in ("packed", "native"):
            torch.manual_seed(0)
            model = SequenceClassifier(30, 3, cell="lstm", backend=backend, embedding_dim=6, hidden_size=5,
                                       proj_size=2, head_hidden=4, num_layers=2, bidirectional=bidirectional,
                                       pooling=pooling, embedding_dropout=0.0, head_dropout=0.0, kernel=kernel)
            logits = model(ids, lengths)
            nn.functional.cross_entropy(logits, y).backward()
            results[kernel] = (model.encode(ids, lengths), logits, [p.grad for p in model.parameters()])
        ref, got = results["packed"], results["native"]
        assert got[0].shape[-1] == 2 * (2 if bidirectional else 1) * (2 if pooling == "maxmean" else 1)
        torch.testing.assert_close(got[0], ref[0], **TOL)
        torch.testing.assert_close(got[1], ref[1], **TOL)
        for a, b in zip(got[2], ref[2]):
            torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("how", ["max", "mean", "maxmean"])
def test_pool_gives_autograds_values_and_gradient_with_ties(how, dtype):
    """The hand-written pooling backward: a max tied between steps shares its gradient, as autograd's amax does;
    padding gets none; the values are autograd's masked amax / mean."""
    _, lengths = ragged(batch=7, max_len=6)
    out = torch.randn(7, 6, 5).to(dtype)
    out[:, 2] = out[:, 0]  # ties at every row long enough to hold step 2
    out[0, 4:] = 100.0  # a large value in row 0's padding (its length is below 4) must not win the max
    lengths[0] = 3
    mask = valid_mask(lengths, 6, "cpu")[..., None]
    grad = torch.randn(7, 10 if how == "maxmean" else 5).to(dtype)

    def by_autograd(x):
        parts = []
        if how != "mean":
            parts.append(x.masked_fill(~mask, float("-inf")).amax(dim=1))
        if how != "max":
            parts.append(x.masked_fill(~mask, 0.0).sum(dim=1) / lengths.to(dtype)[:, None])
        return torch.cat(parts, dim=-1)

    results = []
    for fn in (by_autograd, lambda x: padded.pool(x, lengths, how)):
        x = out.clone().requires_grad_(True)
        y = fn(x)
        y.backward(grad)
        results.append((y.float(), x.grad.float()))
    (want_y, want_g), (got_y, got_g) = results
    tol = TOL if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(got_y, want_y, **tol)
    torch.testing.assert_close(got_g, want_g, **tol)
    assert not got_g[~mask.expand_as(got_g)].any(), "padding got a gradient"
    with torch.no_grad():
        torch.testing.assert_close(padded.pool(out, lengths, how).float(), want_y, **tol)


def test_padding_past_the_longest_row_changes_nothing():
    model = SequenceClassifier(30, 3, cell="gru", embedding_dim=6, hidden_size=5, kernel="fused").eval()
    ids, lengths = ragged()
    with torch.no_grad():
        a = model(ids, lengths)
        b = model(torch.cat([ids, torch.zeros(len(ids), 4, dtype=ids.dtype)], 1), lengths)
    torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("mode,gates", [("LSTM", 4), ("GRU", 3), ("RNN_TANH", 1)])
def test_fused_layer_under_bf16_autocast_stays_close_to_fp32(mode, gates):
    torch.manual_seed(0)
    B, T, I, H = 16, 12, 32, 24
    x = torch.randn(B, T, I)
    lengths = torch.randint(1, T + 1, (B,))
    weights = [torch.randn(2, gates * H, I) * 0.2, torch.randn(2, gates * H, H) * 0.2,
               torch.randn(2, gates * H) * 0.1, torch.randn(2, gates * H) * 0.1]
    fp32 = FusedLayer.apply(mode, x, lengths, *weights)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = FusedLayer.apply(mode, x, lengths, *weights)
    assert bf16.dtype == torch.float32, "states stay fp32 under autocast"
    mask = valid_mask(lengths, T, x.device)
    assert (bf16 - fp32)[mask].abs().max() < 0.05
    assert not torch.equal(bf16, fp32), "the GEMMs really ran in bf16"


def test_dropout_rate_scale_and_seed():
    drop = Dropout(0.3)
    x = torch.ones(200, 500)
    torch.manual_seed(5)
    a = drop(x)
    torch.manual_seed(5)
    b = drop(x)
    assert torch.equal(a, b), "same seed, same mask"
    dropped = (a == 0).float().mean().item()
    assert abs(dropped - 0.3) < 0.01
    assert torch.allclose(a[a != 0], torch.full_like(a[a != 0], 1 / 0.7))
    assert abs(a.mean().item() - 1.0) < 0.02, "expected value preserved"
    drop.eval()
    assert drop(x) is x
    x = torch.randn(10, 20, requires_grad=True)
    drop.train()
    out = drop(x)
    out.sum().backward()
    assert torch.equal(x.grad == 0, out == 0), "no gradient through dropped units"


@pytest.fixture
def two_threads(monkeypatch):
    """Two torch threads and briefly waiting OpenMP threads: where an LSTM's directions run at once."""
    monkeypatch.setenv("GOMP_SPINCOUNT", "10000")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def count_side_by_side(monkeypatch) -> list:
    calls = []
    real = TwoDirections.run

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(TwoDirections, "run", staticmethod(counted))
    return calls


def bidirectional_case(cell, num_layers: int):
    """A seeded bidirectional ``cell`` layer, a ragged batch ``x (9, 12, 5)``, its valid-step mask and
    a random weighting of the outputs (for a loss that reaches every output)."""
    torch.manual_seed(0)
    rnn = cell(5, 7, num_layers=num_layers, bidirectional=True, batch_first=True)
    _, lengths = ragged(batch=9, max_len=12)
    x = torch.randn(len(lengths), int(lengths.max()), 5, requires_grad=True)
    mask = valid_mask(lengths, x.shape[1], x.device)[..., None]
    return rnn, x, lengths, mask, torch.randn(x.shape[0], x.shape[1], 14)


def packed_reference(rnn, x, lengths, weight):
    """The packed path's outputs and the gradients of ``(out * weight).sum()`` for ``x`` and the weights."""
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    ref = pad_packed_sequence(rnn(packed)[0], batch_first=True)[0]
    return ref, torch.autograd.grad((ref * weight).sum(), [x, *rnn.parameters()])


@pytest.mark.parametrize("num_layers", [1, 2])
def test_lstm_directions_side_by_side_equal_packed_and_repeat_bit_for_bit(two_threads, monkeypatch, num_layers):
    calls = count_side_by_side(monkeypatch)
    rnn, x, lengths, mask, weight = bidirectional_case(nn.LSTM, num_layers)
    ref, ref_grads = packed_reference(rnn, x, lengths, weight)

    runs = []
    for _ in range(2):
        out = run_padded(rnn, x, lengths, "native").masked_fill(~mask, 0.0)
        runs.append((out, torch.autograd.grad((out * weight).sum(), [x, *rnn.parameters()])))
    assert len(calls) == 2 * num_layers
    torch.testing.assert_close(runs[0][0], ref, **TOL)
    for got, want in zip(runs[0][1], ref_grads):
        torch.testing.assert_close(got, want, **TOL)
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))

    # Without a graph (pretraining's and training's no-grad passes) the same path, the same outputs: bit for
    # bit where oneDNN uses one primitive for both; on an AVX2-only CPU its inference primitive rounds
    # differently (3e-8 measured on a Zen 3).
    with torch.inference_mode():
        out = run_padded(rnn, x, lengths, "native").masked_fill(~mask, 0.0)
    assert len(calls) == 3 * num_layers
    torch.testing.assert_close(out, runs[0][0], atol=1e-6, rtol=0)

    # Under bf16 autocast each thread gets the caller's autocast, and the result still repeats.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first, second = (run_padded(rnn, x, lengths, "native") for _ in range(2))
    assert first.dtype == torch.bfloat16 and torch.equal(first, second)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_gru_directions_side_by_side_on_the_fused_kernel_equal_packed_and_repeat_bit_for_bit(two_threads, monkeypatch,
                                                                                             num_layers, amp):
    calls = count_side_by_side(monkeypatch)
    rnn, x, lengths, mask, weight = bidirectional_case(nn.GRU, num_layers)

    def run(side_by_side: bool):
        monkeypatch.setattr(padded, "PARALLEL", side_by_side)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = run_padded(rnn, x, lengths, "fused").float().masked_fill(~mask, 0.0)
        return out, torch.autograd.grad((out * weight).sum(), [x, *rnn.parameters()])

    one_loop = run(False)
    assert calls == []
    side, again = run(True), run(True)
    assert len(calls) == 2 * num_layers
    assert torch.equal(side[0], again[0]) and all(torch.equal(a, b) for a, b in zip(side[1], again[1]))
    # The same arithmetic, summed in another order (the two directions' input gradients, the GEMMs'
    # blocking on one thread instead of two): equal to rounding.
    tol = dict(atol=1e-2, rtol=1e-2) if amp else dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(side[0], one_loop[0], **tol)
    for a, b in zip(side[1], one_loop[1]):
        torch.testing.assert_close(a, b, **tol)
    if not amp:
        ref, ref_grads = packed_reference(rnn, x, lengths, weight)
        torch.testing.assert_close(side[0], ref, **TOL)
        for got, want in zip(side[1], ref_grads):
            torch.testing.assert_close(got, want, **TOL)


def test_directions_run_one_after_the_other_where_that_is_faster(two_threads, monkeypatch):
    calls = count_side_by_side(monkeypatch)
    _, lengths = ragged()
    x = torch.randn(len(lengths), int(lengths.max()), 5)
    for cell in (nn.GRU, nn.RNN):  # trained on the fused kernel; torch's own did not repeat exactly
        run_padded(cell(5, 7, bidirectional=True, batch_first=True), x, lengths, "native")
    lstm = nn.LSTM(5, 7, bidirectional=True, batch_first=True)
    run_padded(nn.LSTM(5, 7, batch_first=True), x, lengths, "native")  # one direction
    run_padded(lstm.eval(), x, lengths, "native")  # inference: one review at a time gained nothing
    lstm.train()
    for threads in (1, 3):  # only 2 was measured
        torch.set_num_threads(threads)
        run_padded(lstm, x, lengths, "native")
    torch.set_num_threads(2)
    monkeypatch.delenv("GOMP_SPINCOUNT")  # libgomp's default spin: slower side by side
    assert not padded.openmp_waits_briefly()
    run_padded(lstm, x, lengths, "native")
    assert calls == []


def test_side_by_side_backward_twice_says_so(two_threads):
    lstm = nn.LSTM(5, 7, bidirectional=True, batch_first=True)
    _, lengths = ragged()
    out = run_padded(lstm, torch.randn(len(lengths), int(lengths.max()), 5), lengths, "native")
    out.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        out.sum().backward()


def test_import_rnnkit_shortens_the_openmp_spin_only_before_torch_loads():
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    show = "import os; print(os.environ.get('GOMP_SPINCOUNT'))"
    first = subprocess.run([sys.executable, "-c", f"import rnnkit; {show}"], env=env, capture_output=True, text=True)
    late = subprocess.run([sys.executable, "-c", f"import torch, rnnkit; {show}"], env=env, capture_output=True,
                          text=True)
    assert (first.stdout.strip(), late.stdout.strip()) == ("10000", "None")


def test_bf16_lstm_on_a_cpu_without_native_bf16_runs_the_layer_in_fp32(monkeypatch):
    # oneDNN cannot build a bf16 LSTM without AVX512 (an AVX2-only Zen 3 raised "could not create a primitive
    # descriptor"): there the layer computes in fp32 and hands on bf16, whatever the CPU running this test.
    monkeypatch.setattr(padded, "cpu_has_native_bf16", lambda: False)
    rnn, x, lengths, mask, weight = bidirectional_case(nn.LSTM, 2)
    fp32 = run_padded(rnn, x, lengths, "native")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run_padded(rnn, x, lengths, "native")
    assert out.dtype == torch.bfloat16
    # Each layer's output is rounded to bf16 before the next reads it, so the match is to bf16's rounding.
    torch.testing.assert_close(out.float(), fp32, atol=2e-2, rtol=0)
    (out.float() * weight).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in rnn.parameters())
