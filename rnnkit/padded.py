"""The padded fast path: torch's recurrent layers on padded batches, equal to packing.

Packing (``pack_padded_sequence``) is the textbook way to feed variable-length
batches to ``nn.LSTM``, but it is slow: on CPU a packed LSTM never reaches
oneDNN, on GPU packing turns off cuDNN's persistent kernels. Batches from the
length-bucketed sampler carry little padding, so rnnkit runs them padded and
makes the result *equal* to the packed one:

* the forward direction reads the padded rows as they are: padding comes after
  each row's last valid step, so no valid output ever sees it;
* the backward direction reads each row *reversed within its length*
  (:func:`reverse_within_length`), which puts its valid steps first too, and
  its output is reversed back the same way;
* outputs at padded steps are garbage; every consumer (pooling, the last state)
  looks only at valid steps, so they receive a zero gradient, and a zero
  gradient cannot flow back into valid steps.

Each layer and direction runs on one of two kernels:

* ``native``: torch's own ``aten::lstm/gru/rnn_*`` (oneDNN for the LSTM on CPU,
  cuDNN on GPU). ONNX and TorchScript export always take this one. It also runs
  LSTMs with projections (``proj_size``), through torch's default LSTM kernel:
  oneDNN has none with projections.
* ``fused``: :class:`FusedLayer` below, for training on CPU: both directions of a
  layer step together, the input projections of all steps are one batched GEMM,
  and a hand-written backward replaces autograd's per-op bookkeeping inside the
  time loop. It exists because the GRU and the Elman RNN have no oneDNN path on
  CPU. ``auto`` uses it to train those two; oneDNN measured faster for the LSTM
  (:func:`choose_kernel`, BENCHMARKS.md "CPU speed"). It has no LSTM projections.

Both compute the same function; tests hold them to the packed path within 1e-5.

On a CPU with 2 threads, the two directions of a bidirectional LSTM layer on the ``native``
kernel run at the same time in training, each on its own thread (:class:`TwoDirections`).
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .errors import RnnkitError


def reversed_steps(lengths: Tensor, seq_len: int, device) -> Tensor:
    """``(B, T)``: the step each position reads when its row is reversed within its length.

    ``length[b] - 1 - t`` for valid steps, ``t`` for padding; the map is its own inverse.
    """
    steps = torch.arange(seq_len, device=device).unsqueeze(0)
    last = lengths.to(device, steps.dtype).unsqueeze(1) - 1
    return torch.where(steps <= last, last - steps, steps)


def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's first ``lengths[b]`` steps of ``x (B, T, F)``, leaving padding in place.

    The map is its own inverse: applied to a reversed tensor it restores the original. One
    ``index_select`` over the ``B*T`` rows (3x cheaper forward + backward than ``gather``).
    """
    B, T, _ = x.shape
    source = reversed_steps(lengths, T, x.device)
    rows = (source + torch.arange(B, device=x.device).unsqueeze(1) * T).reshape(-1)
    if x.requires_grad and torch.is_grad_enabled() and not tracing():
        return _Involution.apply(x, rows)
    return _take_rows(x, rows)


def _take_rows(x: Tensor, rows: Tensor) -> Tensor:
    """The ``B*T`` rows of ``x (B, T, F)`` in the order ``rows`` gives, as ``(B, T, F)``."""
    B, T, F = x.shape
    return x.reshape(B * T, F).index_select(0, rows).view(B, T, F)


class _Involution(torch.autograd.Function):
    """``x``'s ``B*T`` rows permuted by ``rows``, a map that is its own inverse, so the gradient goes back
    through the same ``index_select`` instead of autograd's zero-fill and ``scatter_add``. On an NSMC batch of
    embeddings, forward + backward: 0.46-0.54 ms against 0.41-1.06 ms; in whole steps, within the noise."""

    @staticmethod
    def forward(ctx, x: Tensor, rows: Tensor) -> Tensor:
        ctx.save_for_backward(rows)
        return _take_rows(x, rows)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (rows,) = ctx.saved_tensors
        return _take_rows(grad, rows), None


def tracing() -> bool:
    """True while torch records a graph (trace, script, compile): shapes must not come from tensor values then."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


def column_gather(outputs: Tensor, lengths: Tensor) -> Tensor:
    """Pick each row's output at its last valid step (the book's ``column_gather``).

    ``outputs (B, T, H)``, ``lengths (B,)`` -> ``(B, H)``, done as one gather
    instead of the book's Python loop over the batch.
    """
    index = (lengths.to(outputs.device) - 1).view(-1, 1, 1).expand(-1, 1, outputs.shape[-1])
    return outputs.gather(1, index).squeeze(1)


def valid_mask(lengths: Tensor, seq_len: int, device) -> Tensor:
    """``(B, T)`` bool, True at each row's valid steps."""
    return torch.arange(seq_len, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)


def pool(out: Tensor, lengths: Tensor, how: str) -> Tensor:
    """Max, mean or both (``"maxmean"``, max first) over each row's valid steps of ``out (B, T, H)``.

    Returns ``(B, H)``, or ``(B, 2H)`` for ``maxmean``; padded steps count for nothing. In training
    the backward is written by hand (:class:`_Pool`) and gives autograd's gradient (a max's gradient
    split evenly between the steps that tie for it, the mean's spread over the valid steps) in fewer
    passes over ``out``: the mean's part is one batched outer product, and nothing is masked twice.
    An NSMC batch (128 x 25 x 320), forward + backward: 5.2-5.9 ms against 7.6-8.4 ms for autograd's.
    """
    mask = valid_mask(lengths, out.shape[1], out.device)
    if out.requires_grad and torch.is_grad_enabled() and not tracing():
        return _Pool.apply(out, mask, lengths, how)
    return _pool_forward(out, mask, lengths, how)[0]


def _pool_forward(out: Tensor, mask: Tensor, lengths: Tensor, how: str):
    """:func:`pool`'s values, and for the max ``out`` with padding at -inf and the maxima (else None)."""
    parts, filled, top = [], None, None
    if how != "mean":
        filled = out.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        top = filled.amax(dim=1)
        parts.append(top)
    if how != "max":
        # the sum over valid steps as (B, 1, T) 0/1 weights @ out, in out's own dtype (not autocast's)
        with torch.autocast(out.device.type, enabled=False):
            summed = torch.bmm(mask.to(out.dtype).unsqueeze(1), out).squeeze(1)
        parts.append(summed / lengths.to(out.device, out.dtype).unsqueeze(1))
    return (parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)), filled, top


class _Pool(torch.autograd.Function):
    """:func:`pool` in training: the forward saves the -inf-padded outputs and the maxima for the backward."""

    @staticmethod
    def forward(ctx, out: Tensor, mask: Tensor, lengths: Tensor, how: str) -> Tensor:
        pooled, filled, top = _pool_forward(out, mask, lengths, how)
        ctx.how, ctx.shape = how, out.shape
        ctx.save_for_backward(mask, lengths.to(out.device), filled, top)
        return pooled

    @staticmethod
    def backward(ctx, grad: Tensor):
        mask, lengths, filled, top = ctx.saved_tensors
        B, T, H = ctx.shape
        if ctx.how != "max":
            g_mean = grad[:, -H:] / lengths.to(grad.dtype).unsqueeze(1)
            d_out = torch.bmm(mask.to(grad.dtype).unsqueeze(2), g_mean.unsqueeze(1))  # (B, T, 1) @ (B, 1, H)
        else:
            d_out = grad.new_zeros(B, T, H)
        if ctx.how != "mean":
            hit = filled == top.unsqueeze(1)  # the steps that hold the max; ties share its gradient
            share = grad[:, :H] / hit.sum(dim=1).to(grad.dtype)
            d_out.addcmul_(hit, share.unsqueeze(1))
        return d_out, None, None, None


def choose_kernel(kernel: str, rnn: nn.RNNBase, x: Tensor) -> str:
    """What ``auto`` means, from measurements (BENCHMARKS.md, "CPU speed").

    ``fused`` for training the GRU and the Elman RNN on CPU, which have no oneDNN path;
    ``native`` everywhere else: the LSTM on CPU (oneDNN beats the fused kernel), inference
    (torch's kernels were as fast or faster without a backward pass to save), GPUs (cuDNN)
    and exports.
    """
    if kernel == "fused" and getattr(rnn, "proj_size", 0):
        raise RnnkitError("kernel=fused has no LSTM projections; use kernel auto, native or packed, or proj_size 0")
    if kernel != "auto":
        return kernel
    if (x.device.type != "cpu" or rnn.mode == "LSTM" or not torch.is_grad_enabled()
            or torch.jit.is_tracing() or torch.jit.is_scripting()):
        return "native"
    return "fused"


def run_padded(rnn: nn.RNNBase, x: Tensor, lengths: Tensor, kernel: str = "auto",
               between: nn.Module | None = None) -> Tensor:
    """Outputs ``(B, T, D*H)`` of the batch-first ``rnn`` (nn.RNN/LSTM/GRU) on padded ``x (B, T, I)``.

    Equal to running ``rnn`` on ``pack_padded_sequence(x, lengths)`` at every valid step;
    padded steps hold garbage. ``D`` is 2 for a bidirectional ``rnn``, ``H`` its
    ``proj_size`` if it projects, else ``hidden_size``. Dropout between layers follows
    ``rnn.dropout`` in training mode, as ``nn.LSTM`` does, or is ``between`` (a module taking
    ``(B, T, D*H)``, e.g. a locked :class:`rnnkit.model.Dropout`) when given.
    """
    kernel = choose_kernel(kernel, rnn, x)
    mode = rnn.mode  # "LSTM", "GRU", "RNN_TANH", "RNN_RELU"
    directions = ("", "_reverse") if rnn.bidirectional else ("",)
    proj_size = getattr(rnn, "proj_size", 0)
    # aten's own order: the projection W_hr comes after the biases.
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") + (("weight_hr",) if proj_size else ())
    layer_in = x
    for layer in range(rnn.num_layers):
        if layer > 0 and rnn.dropout and rnn.training:
            # torch's mask unless the model passes its own: rnnkit's cheaper one (model.Dropout) made steps 5% faster
            # here but changes every two-layer run's draws, and the NSMC morphemes-only model scored lower on validation
            # with it (one seed; docs/speed.md). The NSMC default passes a locked one (one mask per row).
            layer_in = F.dropout(layer_in, rnn.dropout, True) if between is None else between(layer_in)
        weights = [[getattr(rnn, f"{name}_l{layer}{sfx}") for name in names] for sfx in directions]
        side_by_side = parallel_directions(rnn, layer_in, kernel)
        if kernel == "fused" and not side_by_side:
            layer_in = FusedLayer.apply(mode, layer_in, lengths, *[torch.stack(ws) for ws in zip(*weights)])
            continue
        inputs = [layer_in] + ([reverse_within_length(layer_in, lengths)] if rnn.bidirectional else [])
        if kernel == "fused":  # one direction each: the second reads its rows reversed within their lengths
            run = functools.partial(_fused_direction, mode, lengths=lengths)
        else:
            run = functools.partial(_native, mode, hidden=rnn.hidden_size, training=rnn.training, proj_size=proj_size)
        if side_by_side:
            outs = TwoDirections.run(run, inputs, weights)
        else:
            outs = [run(inp, ws) for inp, ws in zip(inputs, weights)]
        if rnn.bidirectional:
            layer_in = torch.cat([outs[0], reverse_within_length(outs[1], lengths)], dim=-1)
        else:
            layer_in = outs[0]
    return layer_in


PARALLEL = True
"""Run a bidirectional LSTM or GRU layer's two directions at once on CPU (see :class:`TwoDirections`)."""

SIDE_BY_SIDE_KERNEL = {"LSTM": "native", "GRU": "fused"}
"""The kernel on which each cell's directions run at once: oneDNN's LSTM, the fused GRU."""


def openmp_waits_briefly() -> bool:
    """Whether idle OpenMP threads go to sleep soon (``GOMP_SPINCOUNT`` <= 100,000 or a passive policy).

    ``import rnnkit`` sets ``GOMP_SPINCOUNT=10000`` when torch is not loaded yet. With libgomp's
    default (300,000 spins) the caller's idle OpenMP thread keeps a core busy while the two
    directions run, and running them at once measured slower than one after the other.
    """
    spin = os.environ.get("GOMP_SPINCOUNT", "")
    return os.environ.get("OMP_WAIT_POLICY", "").lower() == "passive" or (spin.isdigit() and int(spin) <= 100_000)


def directions_fit_side_by_side(rnn: nn.RNNBase, device) -> bool:
    """Whether ``rnn`` on ``device`` is a layer whose directions rnnkit trains at once, OpenMP's spin aside.

    A bidirectional LSTM without projections (oneDNN's kernel) or GRU (the fused kernel, whose
    time loops run as TorchScript), on a Linux CPU (libgomp, where it was
    measured) with exactly 2 torch threads (the only count measured: on more, the helper thread
    would start a second OpenMP team). torch's own GRU kernel on two threads at once did not
    repeat bit for bit from run to run, so the GRU runs side by side only on the fused kernel.
    """
    return (PARALLEL and rnn.mode in ("LSTM", "GRU") and rnn.bidirectional and not getattr(rnn, "proj_size", 0)
            and torch.device(device).type == "cpu" and torch.get_num_threads() == 2
            and sys.platform.startswith("linux"))


def parallel_directions(rnn: nn.RNNBase, x: Tensor, kernel: str) -> bool:
    """Whether :func:`run_padded` runs the two directions of ``rnn``'s layers at once on ``x`` with ``kernel``.

    :func:`directions_fit_side_by_side` (the LSTM on ``native``, the GRU on ``fused``), in training,
    with briefly waiting OpenMP threads, outside tracing and scripting (exports stay one graph).
    Only in training: for one review at a time (``explain``, ``serve``) it gained nothing at the
    median and now and then stalled for 0.4-1.3 s, where one after the other never took over 0.1 s.
    """
    return (rnn.training and kernel == SIDE_BY_SIDE_KERNEL.get(rnn.mode)
            and directions_fit_side_by_side(rnn, x.device) and openmp_waits_briefly()
            and not tracing())


class TwoDirections(torch.autograd.Function):
    """The two directions of a bidirectional layer, each on half the CPU threads, at the same time.

    A recurrent layer's time loop is a chain of small GEMMs (batch x hidden) that two threads
    split poorly. Both directions of an NSMC-sized LSTM layer (batch 128, 22 steps, bf16) took
    44 ms forward + backward one after the other on 2 threads, and 31 ms side by side on 1 thread
    each; a whole NSMC epoch ran 1.20x faster (BENCHMARKS.md, "CPU speed"). The directions share
    no state, so each runs on its own thread: the calling one and one helper thread. The forward
    records each direction's own autograd graph on its thread;
    the backward replays both graphs at once the same way. Each direction computes exactly what it
    computes alone on that many threads, so results stay deterministic.
    """

    @staticmethod
    def run(fn, inputs: list[Tensor], weights: list[list[Tensor]]) -> list[Tensor]:
        """``[fn(inputs[0], weights[0]), fn(inputs[1], weights[1])]``, computed side by side."""
        if not torch.is_grad_enabled() or not any(t.requires_grad for t in [*inputs, *weights[0], *weights[1]]):
            return list(_side_by_side(fn, (inputs[0], weights[0]), (inputs[1], weights[1])))
        n = len(weights[0])
        return list(TwoDirections.apply(fn, n, *inputs, *weights[0], *weights[1]))

    @staticmethod
    def forward(ctx, fn, n: int, x_f: Tensor, x_b: Tensor, *weights: Tensor):
        wanted = ctx.needs_input_grad[2:]

        def record(tensors, needs):
            leaves = [t.detach().requires_grad_(need) for t, need in zip(tensors, needs)]
            with torch.enable_grad():
                return fn(leaves[0], leaves[1:]), leaves

        forward_dir = [x_f, *weights[:n]], [wanted[0], *wanted[2:2 + n]]
        backward_dir = [x_b, *weights[n:]], [wanted[1], *wanted[2 + n:]]
        ctx.graphs = _side_by_side(record, forward_dir, backward_dir)
        return tuple(y.detach() for y, _ in ctx.graphs)

    @staticmethod
    def backward(ctx, g_f: Tensor, g_b: Tensor):
        if ctx.graphs is None:
            raise RuntimeError("rnnkit.padded.TwoDirections: backward ran twice on one forward; "
                               "run the forward again (retain_graph is not supported here)")

        def replay(graph, grad):
            y, leaves = graph
            wanted = [t for t in leaves if t.requires_grad]
            got = iter(torch.autograd.grad(y, wanted, grad, allow_unused=True) if wanted else ())
            return [next(got) if t.requires_grad else None for t in leaves]

        fwd, bwd = _side_by_side(replay, (ctx.graphs[0], g_f), (ctx.graphs[1], g_b))
        ctx.graphs = None
        return (None, None, fwd[0], bwd[0], *fwd[1:], *bwd[1:])


_helper: tuple[int, ThreadPoolExecutor] | None = None


def _side_by_side(fn, first: tuple, second: tuple) -> tuple:
    """``(fn(*first), fn(*second))``, the second on a helper thread, splitting torch's threads.

    torch's grad mode, inference mode and CPU autocast are per thread, so the helper gets the
    caller's. So is the OpenMP thread count: the caller drops to the other half for the call.
    """
    global _helper
    if _helper is None or _helper[0] != os.getpid():  # a forked child has no helper thread
        _helper = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="rnnkit-direction"))
    total = torch.get_num_threads()
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    autocast = torch.is_autocast_enabled("cpu")
    dtype = torch.get_autocast_dtype("cpu")

    def helper():
        if torch.get_num_threads() != total // 2:
            torch.set_num_threads(total // 2)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad), \
                torch.autocast("cpu", dtype=dtype, enabled=autocast):
            return fn(*second)

    pending = _helper[1].submit(helper)
    torch.set_num_threads(total - total // 2)
    try:
        done = fn(*first)
    finally:
        torch.set_num_threads(total)
        other = pending.result()
    return done, other


def last_state(out: Tensor, lengths: Tensor, bidirectional: bool) -> Tensor:
    """``h_n`` of the top layer as ``(B, D*H)`` from :func:`run_padded`'s output.

    The forward direction's last state is at each row's last valid step; the
    backward direction, reversed back, ends at step 0.
    """
    last = column_gather(out, lengths)
    if not bidirectional:
        return last
    h = out.shape[-1] // 2
    return torch.cat([last[:, :h], out[:, 0, h:]], dim=-1)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (x86 AVX512-BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def _native(mode: str, x: Tensor, weights: list, hidden: int, training: bool, proj_size: int = 0) -> Tensor:
    """One layer, one direction through torch's kernel (oneDNN / cuDNN / ATen).

    ``x (B, T, I)`` -> ``(B, T, proj_size or hidden)``; ``weights`` end with ``W_hr``
    when ``proj_size`` is set.
    """
    h0 = x.new_zeros(1, x.shape[0], hidden)
    if mode == "LSTM":
        if (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") == torch.bfloat16 and not cpu_has_native_bf16()):
            # oneDNN has no bf16 LSTM without AVX512 ("could not create a primitive descriptor", seen on an
            # AVX2-only Zen 3): bf16 asked for there (--precision bf16) runs this layer in fp32 and hands on
            # bf16, as the native layer would.
            with torch.autocast("cpu", enabled=False):
                out = _native(mode, x.float(), weights, hidden, training, proj_size)  # weights are fp32
            return out.to(torch.bfloat16)
        # aten tells an LSTM with projections by h_0 being narrower than c_0.
        h0_lstm = x.new_zeros(1, x.shape[0], proj_size) if proj_size else h0
        return torch._VF.lstm(x, (h0_lstm, h0), weights, True, 1, 0.0, training, False, True)[0]
    fn = {"GRU": torch._VF.gru, "RNN_TANH": torch._VF.rnn_tanh, "RNN_RELU": torch._VF.rnn_relu}[mode]
    return fn(x, h0, weights, True, 1, 0.0, training, False, True)[0]


def _fused_direction(mode: str, x: Tensor, weights: list, lengths: Tensor) -> Tensor:
    """One direction of a layer on the fused kernel, reading ``x``'s rows forward: ``(B, T, H)``."""
    return FusedLayer.apply(mode, x, lengths, *[w.unsqueeze(0) for w in weights])


class FusedLayer(torch.autograd.Function):
    """One recurrent layer, all directions at once, with a hand-written backward.

    ``forward(mode, x (B, T, I), lengths (B,), w_ih (D, G*H, I), w_hh (D, G*H, H), b_ih (D, G*H),
    b_hh (D, G*H))`` returns the layer's output ``(B, T, D*H)`` as a packed run would give it
    at every valid step, each direction starting from zeros. Gate order and equations are
    torch's. Inside, everything is time-major ``(D, T, B, ...)``: one ``index_select`` gathers
    both directions' inputs (the second reversed within each row's length), one batched GEMM
    makes every step's input projection, and one ``index_select`` puts the states back in
    batch-first order. Under CPU autocast the GEMMs run in its dtype (bf16) while states,
    gate arithmetic and gradient sums stay fp32.
    """

    @staticmethod
    def forward(ctx, mode: str, x: Tensor, lengths: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                b_hh: Tensor) -> Tensor:
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32
        B, T, I = x.shape
        D = w_ih.shape[0]
        with torch.autocast("cpu", enabled=False):
            in_rows, out_rows = _layer_rows(lengths, B, T, D)
            x_c = x.reshape(B * T, I).to(dtype).index_select(0, in_rows).view(D, T, B, I)
            hs, saved = _fused_forward(mode, x_c, w_ih.float(), w_hh.float(), b_ih.float(), b_hh.float(), dtype)
            out = hs.view(-1, hs.shape[-1]).index_select(0, out_rows).view(B, T, -1)
        ctx.mode, ctx.dtype, ctx.x_dtype, ctx.hs_shape = mode, dtype, x.dtype, hs.shape
        ctx.save_for_backward(w_ih, w_hh, in_rows, out_rows, x_c, *saved)
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        w_ih, w_hh, in_rows, out_rows, x_c, *saved = ctx.saved_tensors
        D, T1, B, H = ctx.hs_shape
        with torch.autocast("cpu", enabled=False):
            dy = grad_out.new_zeros(D * T1 * B, H, dtype=torch.float32)
            dy.index_copy_(0, out_rows, grad_out.reshape(-1, H).float())
            d_xc, *d_w = _fused_backward(ctx.mode, dy.view(D, T1, B, H)[:, 1:], x_c, w_ih.float(), w_hh.float(),
                                         saved, ctx.dtype)
            I = d_xc.shape[-1]
            d_x = d_xc.new_zeros(B * (T1 - 1), I, dtype=torch.float32)
            d_x.index_add_(0, in_rows, d_xc.reshape(-1, I).float())
        return (None, d_x.view(B, T1 - 1, I).to(ctx.x_dtype), None, *(g.to(w_ih.dtype) for g in d_w))


def _layer_rows(lengths: Tensor, B: int, T: int, D: int) -> tuple[Tensor, Tensor]:
    """Row maps between batch-first ``(B*T)`` rows and the kernel's time-major layout.

    ``in_rows (D*T*B,)``: row ``(d, t, b)`` of the kernel's input reads row ``b*T + s`` of
    ``x``, where ``s = t`` forward and ``s = length[b]-1-t`` (within the length) backward.
    ``out_rows (B*T*D,)``: output row ``(b, s, d)`` reads the state after step ``t`` of
    direction ``d``, row ``(d, t+1, b)`` of ``hs (D, T+1, B, H)``.
    """
    t = torch.arange(T).view(T, 1)
    b = torch.arange(B).view(1, B)
    rev = reversed_steps(lengths, T, "cpu").t()  # (T, B)
    src = [t.expand(T, B)] + ([rev] if D == 2 else [])
    in_rows = torch.stack([b * T + s for s in src]).reshape(-1)
    # For (b, s): forward state at t = s, backward state at t = rev[s] (rev is its own inverse).
    s = torch.arange(T).view(1, T)
    bb = torch.arange(B).view(B, 1)
    steps = [s.expand(B, T)] + ([rev.t()] if D == 2 else [])
    out_rows = torch.stack([d * (T + 1) * B + (st + 1) * B + bb for d, st in enumerate(steps)], dim=-1)
    return in_rows.to(lengths.device), out_rows.reshape(-1).to(lengths.device)


GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


@functools.lru_cache(maxsize=None)
def _script(name: str):
    """``torch.jit.script`` of this module's function ``name``, compiled on first use (not at import).

    TorchScript runs a time loop without Python between its small ops. Two Python loops on two threads
    mostly took turns (18.8 ms per pair against 11.9 ms for one); scripted ones overlap more (14.9 ms
    against 10.5 ms), which lets a GRU layer's directions train side by side (:class:`TwoDirections`).
    torch 2.13 marks ``torch.jit.script`` deprecated in favour of ``torch.compile``, whose first epoch
    here took 4.9-21.5 s to compile (docs/speed.md); the warning is silenced, the choice is deliberate.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning)
        return torch.jit.script(globals()[name])


def _gru_forward_steps(gi: Tensor, w_hh_t: Tensor, b_hh: Tensor, hs: Tensor, hs_c: Tensor, hn: Tensor):
    """The GRU's forward time loop: fills ``hs[:, 1:]`` (and ``hs_c``, its copy in the GEMM dtype, if
    separate) and ``hn``, and overwrites ``gi`` with the gates ``r, z, n``. Shapes as in :func:`_fused_forward`."""
    H = hs.shape[-1]
    separate = hs_c.dtype != hs.dtype  # hs_c is hs itself in fp32
    for t in range(gi.shape[1]):
        gh = torch.bmm(hs_c[:, t], w_hh_t)
        a = gi[:, t]
        rz = a[:, :, :2 * H].add_(gh[:, :, :2 * H]).add_(b_hh[:, :, :2 * H]).sigmoid_()
        r, z = rz[:, :, :H], rz[:, :, H:]
        torch.add(gh[:, :, 2 * H:], b_hh[:, :, 2 * H:], out=hn[:, t])
        n = a[:, :, 2 * H:].addcmul_(r, hn[:, t]).tanh_()
        torch.addcmul(n, z, hs[:, t] - n, out=hs[:, t + 1])
        if separate:
            hs_c[:, t + 1].copy_(hs[:, t + 1])


def _gru_backward_steps(dy: Tensor, rzn: Tensor, hs: Tensor, hn: Tensor, w_hh_c: Tensor, dgh32: Tensor,
                        dan_all: Tensor):
    """The GRU's backward time loop: the hidden-side pre-activation gradients into ``dgh32``, and the n
    gate's before ``r`` scales it into ``dan_all`` (the input side's). Shapes as in :func:`_fused_backward`."""
    T, H = dy.shape[1], dy.shape[3]
    dh = torch.zeros_like(dy[:, 0])
    for step in range(T):
        t = T - 1 - step
        dh = dh + dy[:, t]
        r, z, n = rzn[:, t, :, :H], rzn[:, t, :, H:2 * H], rzn[:, t, :, 2 * H:]
        g = dgh32[:, t]
        dn = torch.addcmul(dh, dh, z, value=-1)                       # dh * (1 - z)
        dan = torch.addcmul(dn, dn, n * n, value=-1, out=dan_all[:, t])  # dn * (1 - n^2)
        torch.mul(dan * hn[:, t], torch.addcmul(r, r, r, value=-1), out=g[:, :, :H])
        torch.mul(dh * (hs[:, t] - n), torch.addcmul(z, z, z, value=-1), out=g[:, :, H:2 * H])
        torch.mul(dan, r, out=g[:, :, 2 * H:])
        dh = torch.bmm(g.to(w_hh_c.dtype), w_hh_c).float().addcmul_(dh, z)


def _fused_forward(mode: str, x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor,
                   dtype: torch.dtype):
    D, T, B, _ = x.shape
    H = w_hh.shape[-1]
    # Input projections of every step in one batched GEMM, fp32: gi (D, T, B, G*H).
    gi = torch.add(b_ih.unsqueeze(1), torch.bmm(x.view(D, T * B, -1), w_ih.transpose(1, 2).to(dtype)))
    gi = gi.view(D, T, B, -1)
    w_hh_t = w_hh.transpose(1, 2).to(dtype)
    b_hh = b_hh.unsqueeze(1)
    hs = x.new_zeros(D, T + 1, B, H, dtype=torch.float32)  # hs[:, t]: the state before step t
    # The states again in the compute dtype: the next step's GEMM operand, and dW_hh's later.
    hs_c = hs if dtype == torch.float32 else hs.to(dtype)
    if mode == "LSTM":
        acts = gi  # overwritten in place: sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
        cs = hs.new_zeros(D, T + 1, B, H)
        for t in range(T):
            a = gi[:, t].add_(torch.bmm(hs_c[:, t], w_hh_t)).add_(b_hh)
            i, f, g, o = a.chunk(4, -1)
            a[..., :2 * H].sigmoid_()
            g.tanh_()
            o.sigmoid_()
            c = torch.addcmul(f * cs[:, t], i, g, out=cs[:, t + 1])
            torch.mul(o, torch.tanh(c), out=hs[:, t + 1])
            if hs_c is not hs:
                hs_c[:, t + 1].copy_(hs[:, t + 1])
        saved = (hs_c, cs, acts)
    elif mode == "GRU":
        hn = hs.new_empty(D, T, B, H)  # W_hn h + b_hn, before r scales it
        with torch.jit.optimized_execution(False):  # the plain interpreter: no warm-up passes, same result
            _script("_gru_forward_steps")(gi, w_hh_t, b_hh, hs, hs_c, hn)
        saved = (hs, hs_c, gi, hn)  # gi now holds r, z, n
    else:
        for t in range(T):
            a = gi[:, t].add_(torch.bmm(hs_c[:, t], w_hh_t)).add_(b_hh)
            hs[:, t + 1].copy_(a.tanh_() if mode == "RNN_TANH" else a.relu_())
            if hs_c is not hs:
                hs_c[:, t + 1].copy_(hs[:, t + 1])
        saved = (hs, hs_c)
    return hs, saved


def _fused_backward(mode: str, dy: Tensor, x_c: Tensor, w_ih: Tensor, w_hh: Tensor, saved, dtype: torch.dtype):
    """Gradients ``(d_x, d_w_ih, d_w_hh, d_b_ih, d_b_hh)`` from ``dy (D, T, B, H)``, the states' gradient."""
    D, T, B, H = dy.shape
    G = GATES[mode]
    w_hh_c = w_hh.to(dtype)
    # Pre-activation gradients of every step, kept for the weight GEMMs: dgi for the input side
    # and dgh for the hidden side (they differ only in the GRU's n gate, scaled by r there).
    dgi = dgh = dy.new_empty(D, T, B, G * H, dtype=dtype) if mode != "GRU" else None
    dh = dy.new_zeros(D, B, H)
    if mode == "LSTM":
        hs_c, cs, acts = saved
        dc = torch.zeros_like(dh)
        for t in range(T - 1, -1, -1):
            dh = dh + dy[:, t]
            i, f, g, o = acts[:, t].chunk(4, -1)
            tc = torch.tanh(cs[:, t + 1])
            dc = dc.addcmul_(dh * o, 1 - tc * tc)
            di, df, dg, do = dgi[:, t].chunk(4, -1)
            torch.mul(dc * g, i * (1 - i), out=di)
            torch.mul(dc * cs[:, t], f * (1 - f), out=df)
            torch.mul(dc * i, 1 - g * g, out=dg)
            torch.mul(dh * tc, o * (1 - o), out=do)
            dc = dc * f
            dh = torch.bmm(dgi[:, t], w_hh_c).float()
    elif mode == "GRU":
        hs, hs_c, rzn, hn = saved
        # Hidden-side gradients in fp32, written in place per step; the input side differs only in
        # the n block (no factor r), kept apart and merged once after the loop.
        dgh32 = dy.new_empty(D, T, B, G * H)
        dan_all = dy.new_empty(D, T, B, H)
        with torch.jit.optimized_execution(False):
            _script("_gru_backward_steps")(dy, rzn, hs, hn, w_hh_c, dgh32, dan_all)
        dgh = dgh32.to(dtype)
        dgi = dgh.clone()
        dgi[..., 2 * H:].copy_(dan_all)
    else:
        hs, hs_c = saved
        for t in range(T - 1, -1, -1):
            dh = dh + dy[:, t]
            h = hs[:, t + 1]
            torch.mul(dh, 1 - h * h if mode == "RNN_TANH" else (h > 0).to(h.dtype), out=dgi[:, t])
            dh = torch.bmm(dgi[:, t], w_hh_c).float()
    # Weight and input gradients as GEMMs over all steps and rows at once, rows ordered (T, B).
    flat_gi = dgi.view(D, T * B, G * H)
    flat_gh = dgh.view(D, T * B, G * H)
    h_prev = hs_c[:, :-1].reshape(D, T * B, H)
    d_w_hh = torch.bmm(flat_gh.transpose(1, 2), h_prev).float()
    d_w_ih = torch.bmm(flat_gi.transpose(1, 2), x_c.view(D, T * B, -1)).float()
    d_b_hh = flat_gh.sum(1, dtype=torch.float32)
    d_b_ih = flat_gi.sum(1, dtype=torch.float32)
    d_x = torch.bmm(flat_gi, w_ih.to(dtype)).view(D, T, B, -1)
    return d_x, d_w_ih, d_w_hh, d_b_ih, d_b_hh
