"""Recurrent layers written with plain tensor ops, drop-in compatible with torch.

:class:`ElmanRNN` (alias :data:`RNN`), :class:`LSTM` and :class:`GRU` take the
same constructor arguments, own parameters with the same names, shapes and
initialisation, return the same ``(output, h_n)`` structures and raise the same
errors as :class:`torch.nn.RNN`, :class:`torch.nn.LSTM` and :class:`torch.nn.GRU`,
so a ``state_dict`` moves freely between ours and torch's. The LSTM supports
projections (``proj_size``) as torch's does.

How a forward pass runs, for every cell alike:

1. The input is brought to a time-major padded tensor ``(seq, batch, feature)``
   plus, for a :class:`~torch.nn.utils.rnn.PackedSequence`, a ``lengths`` tensor
   ``(batch,)``.  Packed batches are kept in the packed (length-sorted) order
   until the very end, exactly as torch does.
2. Per layer and direction, the input projection ``x @ W_ih^T + b_ih`` for all
   time steps is one matmul; only the recurrent part loops in Python.
3. Sequences shorter than ``seq`` are masked: where ``t >= length`` the state is
   kept, so each sequence's final state is the one at its own last valid step.
   The reverse direction reverses each sequence within its own length, runs the
   same forward loop and reverses the result back.
4. One small *step function* per cell combines the input projection and the
   hidden projection of one time step into the new state; everything else is
   shared. An LSTM with projections passes its ``W_hr`` to the step function,
   which projects the new ``h`` down to ``proj_size``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from functools import partial
from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence

__all__ = ["ElmanRNN", "RNN", "LSTM", "GRU"]

# The recurrent state of one layer and direction: ``(h,)`` for the Elman RNN and
# the GRU, ``(h, c)`` for the LSTM; every tensor is ``(batch, hidden)``, except an
# LSTM's ``h`` with projections, which is ``(batch, proj_size)``.
State = Tuple[Tensor, ...]

# ``step(gi, gh, state) -> new_state`` where ``gi`` is the input projection
# ``x_t @ W_ih^T + b_ih`` and ``gh`` the hidden projection ``h @ W_hh^T + b_hh``,
# both ``(batch, gates * hidden)``.  ``gi`` and ``gh`` stay separate (rather than
# one fused addmm) because the GRU needs ``W_hn h + b_hn`` on its own.
StepFn = Callable[[Tensor, Tensor, State], State]


# --------------------------------------------------------------------------
# Cells: the only code that differs between RNN, LSTM and GRU.
# --------------------------------------------------------------------------


def _rnn_tanh_step(gi: Tensor, gh: Tensor, state: State) -> State:
    """``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``."""
    return (torch.tanh(gi + gh),)


def _rnn_relu_step(gi: Tensor, gh: Tensor, state: State) -> State:
    """``h' = relu(W_ih x + b_ih + W_hh h + b_hh)``."""
    return (torch.relu(gi + gh),)


def _lstm_step(gi: Tensor, gh: Tensor, state: State, w_hr: Optional[Tensor] = None) -> State:
    """Gate order ``i, f, g, o`` as in torch::

        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')
        h' = h' W_hr^T                  (only with projections, proj_size > 0)

    ``c`` is ``([directions,] batch, hidden)``; ``w_hr`` is ``([directions,]
    proj_size, hidden)`` or ``None``, and ``h'`` comes out ``([directions,]
    batch, proj_size)`` with it, ``([directions,] batch, hidden)`` without.
    """
    c = state[1]
    hidden = c.size(-1)
    gates = gi + gh
    # One sigmoid over all four blocks beats three small ones: at these sizes
    # the per-op overhead dominates, and the wasted sigmoid(g) only ever
    # receives a zero gradient.
    i, f, _, o = torch.sigmoid(gates).chunk(4, -1)
    g = torch.tanh(gates[..., 2 * hidden : 3 * hidden])
    c = torch.addcmul(f * c, i, g)
    h = o * torch.tanh(c)
    if w_hr is not None:
        h = torch.matmul(h, w_hr.transpose(-1, -2))
    return h, c


def _gru_step(gi: Tensor, gh: Tensor, state: State) -> State:
    """Gate order ``r, z, n`` as in torch::

        r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h
    """
    h = state[0]
    hidden = h.size(-1)
    i_rz, i_n = gi.split([2 * hidden, hidden], -1)
    h_rz, h_n = gh.split([2 * hidden, hidden], -1)
    r, z = torch.sigmoid(i_rz + h_rz).chunk(2, -1)
    n = torch.tanh(torch.addcmul(i_n, r, h_n))
    # (1 - z) * n + z * h rewritten with one op fewer, as ATen does.
    return (torch.addcmul(n, z, h - n),)


# --------------------------------------------------------------------------
# The generic layer loop and the helpers for variable lengths.
# --------------------------------------------------------------------------


def _run_direction(
    step: StepFn,
    gi: Tensor,
    state: State,
    w_hh: Tensor,
    b_hh: Optional[Tensor],
    mask: Optional[Tensor],
) -> Tuple[Tensor, State]:
    """Run one direction of one layer forward in time, or both directions at once.

    Both directions of a bidirectional layer step together when their tensors
    carry a leading ``directions`` dimension of 2 (the backward one already
    reversed in time): the hidden projection becomes one batched matmul and
    each cell op runs once for both, halving the per-step Python and dispatch
    work that dominates at these sizes.

    Below ``h_size`` is the size of ``h``: ``hidden``, or ``proj_size`` for an
    LSTM with projections (whose ``c`` stays ``hidden``).

    Args:
        step: the cell's step function.
        gi: input projections for every step, ``(seq, [directions,] batch, gates * hidden)``.
        state: initial state, ``h`` ``([directions,] batch, h_size)`` (and ``c``
            ``([directions,] batch, hidden)``).
        w_hh: ``([directions,] gates * hidden, h_size)``.
        b_hh: ``([directions,] gates * hidden)`` or ``None``.
        mask: ``(seq, batch, 1)`` bool, ``True`` where the step is valid, or
            ``None`` when every sequence spans all ``seq`` steps.

    Returns:
        ``(output, final_state)`` with ``output`` ``(seq, [directions,] batch, h_size)``,
        zero where ``mask`` is ``False``, and ``final_state`` each sequence's
        state after its last valid step.
    """
    stacked = w_hh.dim() == 3
    w_hh_t = w_hh.transpose(-1, -2)
    if stacked and b_hh is not None:
        b_hh = b_hh.unsqueeze(1)
    outputs: List[Tensor] = []
    # unbind, not gi[t]: the backward of each gi[t] would allocate and fill a
    # whole (seq, batch, gates * hidden) gradient, making backward O(seq^2);
    # unbind's backward stacks all step gradients once.
    for t, gi_t in enumerate(gi.unbind(0)):
        h = state[0]
        if stacked:
            gh = torch.baddbmm(b_hh, h, w_hh_t) if b_hh is not None else torch.bmm(h, w_hh_t)
        else:
            gh = torch.addmm(b_hh, h, w_hh_t) if b_hh is not None else h.mm(w_hh_t)
        new_state = step(gi_t, gh, state)
        if mask is not None:
            # Finished sequences keep their state so that the value left at the
            # end of the loop is the state at each sequence's own last step.
            keep = mask[t]
            new_state = tuple(torch.where(keep, n, o) for n, o in zip(new_state, state))
        state = new_state
        outputs.append(state[0])
    output = torch.stack(outputs)
    if mask is not None:
        # One fill at the end instead of one per step: positions past a
        # sequence's end hold its frozen state, torch reports zeros there.
        output = output.masked_fill(~(mask.unsqueeze(1) if stacked else mask), 0.0)
    return output, state


def _reverse_index(lengths: Tensor, seq_len: int) -> Tensor:
    """Flat row index that reverses every sequence within its own length.

    For a time-major tensor viewed as ``(seq * batch, feature)``, row
    ``t * batch + b`` of the result is read from row
    ``(length[b] - 1 - t) * batch + b`` when ``t < length[b]`` and from itself
    otherwise, so padding stays at the end.  The map is its own inverse, so
    the same index undoes it.

    Args:
        lengths: ``(batch,)`` int64.

    Returns:
        ``(seq * batch,)`` int64 on ``lengths.device``.
    """
    batch = lengths.size(0)
    t = torch.arange(seq_len, device=lengths.device).unsqueeze(1)
    src_t = torch.where(t < lengths, lengths - 1 - t, t)
    rows = src_t * batch + torch.arange(batch, device=lengths.device)
    return rows.reshape(-1)


def _reverse(x: Tensor, index: Optional[Tensor]) -> Tensor:
    """Reverse a time-major ``(seq, batch, feature)`` tensor in time.

    ``index`` comes from :func:`_reverse_index`; ``None`` means every sequence
    is full length, so a plain flip does.
    """
    if index is None:
        return x.flip(0)
    return x.reshape(-1, x.size(2)).index_select(0, index).view_as(x)


def _packed_rows(batch_sizes: Tensor, device: torch.device) -> Tuple[Tensor, Tensor]:
    """Where each row of a packed ``data`` tensor sits in the padded layout.

    Packed data is time-major: step ``t`` holds the first ``batch_sizes[t]``
    sequences in sorted order.  Returns ``(rows, lengths)``: ``rows`` is the
    flat index ``t * batch + b`` of every packed row into a ``(seq * batch,)``
    view of the padded tensor, ``lengths`` the ``(batch,)`` length of every
    sequence in sorted order (non-increasing).
    """
    batch_sizes = batch_sizes.to("cpu", torch.int64)
    seq_len, batch = batch_sizes.numel(), int(batch_sizes[0])
    lengths = (batch_sizes.unsqueeze(1) > torch.arange(batch)).sum(0)
    step = torch.repeat_interleave(torch.arange(seq_len), batch_sizes)
    step_start = torch.cumsum(batch_sizes, 0) - batch_sizes
    slot = torch.arange(step.numel()) - step_start[step]
    rows = step * batch + slot
    return rows.to(device), lengths.to(device)


# --------------------------------------------------------------------------
# Modules.
# --------------------------------------------------------------------------


def _stack_directions(forward: Tensor, backward: Tensor) -> Tensor:
    """``(2, *shape)``: one direction's weight and the other's, for batched matmuls.

    The stacked weights are used transposed, so the gradient that reaches the
    stack is a transposed, non-contiguous view, and so would be each weight's
    share of it. ``.grad`` is made dense by autograd's accumulation anyway, but
    ``torch.autograd.grad`` returns gradients as they come, and torch's own
    layers give dense ones: the hook makes the gradient dense before the split.
    """
    stacked = torch.stack([forward, backward])
    if stacked.requires_grad:
        # The gradient is None where autograd has nothing to pass (gradcheck's
        # partial derivatives, for one).
        stacked.register_hook(lambda grad: None if grad is None else grad.contiguous())
    return stacked


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no device_type argument
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


# The error messages below are torch's, word for word (torch/nn/modules/rnn.py):
# callers and tests match on them.
_PROJ_ONLY_LSTM = "proj_size argument is only supported for LSTM, not RNN or GRU"

# Marks "proj_size not given" for ElmanRNN and GRU: torch refuses the argument
# itself, even proj_size=0.
_NO_PROJ = object()


class _RecurrentBase(nn.Module):
    """Shared machinery of :class:`ElmanRNN`, :class:`LSTM` and :class:`GRU`.

    Subclasses set ``mode`` (torch's name for the cell), ``_gates`` (how many
    ``hidden``-sized blocks the weights stack) and ``_step``.
    """

    _gates: int
    _step: StepFn
    _input_dim_error: str  # torch's words, which differ slightly per class

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        # The checks, their order, types and messages are torch's (RNNBase.__init__).
        if (
            not isinstance(dropout, numbers.Number)
            or isinstance(dropout, bool)
            or not 0 <= dropout <= 1
        ):
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the "
                "probability of an element being zeroed"
            )
        if dropout > 0 and num_layers == 1:
            # Same text as torch so that warning filters written for torch apply.
            warnings.warn(
                "dropout option adds dropout after all but last "
                "recurrent layer, so non-zero dropout expects "
                f"num_layers greater than 1, but got dropout={dropout} and "
                f"num_layers={num_layers}",
                stacklevel=3,
            )
        for name, flag in (("bias", bias), ("batch_first", batch_first)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} should be of type bool, got: {type(flag).__name__}")
        for name, size in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(size, int):
                raise TypeError(f"{name} should be of type int, got: {type(size).__name__}")
            if size <= 0:
                raise ValueError(f"{name} must be greater than zero")
        if not isinstance(num_layers, int):
            # torch has no check here and fails later in range(); same type, clearer words.
            raise TypeError(f"num_layers should be of type int, got: {type(num_layers).__name__}")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")

        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size

        factory = {"device": device, "dtype": dtype}
        gate_size = self._gates * hidden_size
        # h (and with it every layer's output) is proj_size wide with projections.
        h_size = proj_size if proj_size > 0 else hidden_size
        num_directions = 2 if bidirectional else 1
        # Parameters are registered in torch's order so that reset_parameters,
        # which walks self.parameters(), draws identical values for a given seed.
        self._all_weights: List[List[str]] = []
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else h_size * num_directions
            for direction in range(num_directions):
                suffix = "_reverse" if direction == 1 else ""
                shapes = [
                    ("weight_ih", (gate_size, layer_input_size)),
                    ("weight_hh", (gate_size, h_size)),
                ]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size > 0:
                    shapes += [("weight_hr", (proj_size, hidden_size))]
                names = []
                for prefix, shape in shapes:
                    name = f"{prefix}_l{layer}{suffix}"
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
                    names.append(name)
                self._all_weights.append(names)
        self.reset_parameters()

    def __setstate__(self, state):
        super().__setstate__(state)
        # Modules pickled before proj_size existed (as torch does for its own).
        if "proj_size" not in self.__dict__:
            self.proj_size = 0

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def all_weights(self) -> List[List[nn.Parameter]]:
        """Parameters grouped per layer and direction, as in torch."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def reset_parameters(self) -> None:
        """Draw every parameter from ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def flatten_parameters(self) -> None:
        """No-op, present so code written for torch's cuDNN modules runs unchanged."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s

    # ---- the state as the caller sees it vs. as the loop uses it ----------

    def _state_sizes(self) -> Tuple[int, ...]:
        """Size of each tensor in a state: ``(h,)`` or ``(h, c)``."""
        return (self.hidden_size,)

    def _pack_state(self, states: Tuple[Tensor, ...]):
        """Turn the internal tuple of final states into what forward returns."""
        return states[0]

    def _unpack_state(self, hx) -> Tuple[Tensor, ...]:
        """Turn the caller's ``hx`` into a tuple of tensors."""
        if not isinstance(hx, Tensor):
            raise TypeError(f"{type(self).__name__}: hx should be a Tensor, got {type(hx).__name__}")
        return (hx,)

    def _check_state_dims(self, states: State, batched: bool) -> None:
        """torch's RuntimeError when ``hx`` is not 3-D for a batch (2-D for one sequence)."""
        want = 3 if batched else 2
        if any(s.dim() != want for s in states):
            shape = "batched 3-D" if batched else "unbatched 2-D"
            raise RuntimeError(
                f"For {shape} input, hx should also be {want}-D but got {states[0].dim()}-D tensor"
            )

    # ---- forward -----------------------------------------------------------

    def forward(self, input, hx=None):
        """See the subclass docstring for shapes."""
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        if not isinstance(input, Tensor):
            raise TypeError(
                f"{type(self).__name__}: input should be a Tensor or PackedSequence, "
                f"got {type(input).__name__}"
            )
        if input.dim() not in (2, 3):
            raise ValueError(self._input_dim_error.format(input.dim()))
        batched = input.dim() == 3
        states = None if hx is None else self._unpack_state(hx)
        if states is not None:
            self._check_state_dims(states, batched)
        if not batched:
            # Unbatched (seq, feature): run as a batch of one.
            input = input.unsqueeze(0 if self.batch_first else 1)
            if states is not None:
                states = tuple(s.unsqueeze(1) for s in states)
        self._check_input(input)
        states = self._initial_states(input.size(0 if self.batch_first else 1), input, states)
        if input.size(1 if self.batch_first else 0) == 0:
            # Same message as torch; a zero-step loop would have no output.
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        # Time-major and contiguous, so the input projection comes out with each
        # step a contiguous (batch, gates * hidden) block.
        x = input.transpose(0, 1).contiguous() if self.batch_first else input
        output, final = self._run(x, states, lengths=None)
        if self.batch_first:
            output = output.transpose(0, 1).contiguous()
        if not batched:
            output = output.squeeze(0 if self.batch_first else 1)
            final = tuple(s.squeeze(1) for s in final)
        return output, self._pack_state(final)

    def _forward_packed(self, packed: PackedSequence, hx):
        data, batch_sizes, sorted_indices, unsorted_indices = packed
        self._check_input(data, packed=True)
        batch, seq_len = int(batch_sizes[0]), batch_sizes.numel()
        rows, lengths = _packed_rows(batch_sizes, data.device)
        if int(batch_sizes[-1]) == batch:
            # Every sequence spans all steps: skip the masking work.
            lengths = None
        # Scatter the packed rows into a zero-padded (seq, batch, feature) tensor
        # that stays in the packed (sorted) batch order, like torch's kernels.
        x = data.new_zeros(seq_len * batch, data.size(1)).index_copy(0, rows, data)
        x = x.view(seq_len, batch, data.size(1))
        states = self._initial_states(batch, data, None if hx is None else self._unpack_state(hx))
        if hx is not None and sorted_indices is not None:
            # The caller gives hx in their own batch order; the loop runs in
            # sorted order.
            states = tuple(s.index_select(1, sorted_indices) for s in states)
        output, final = self._run(x, states, lengths=lengths)
        out_data = output.reshape(seq_len * batch, -1).index_select(0, rows)
        if unsorted_indices is not None:
            final = tuple(s.index_select(1, unsorted_indices) for s in final)
        out = PackedSequence(out_data, batch_sizes, sorted_indices, unsorted_indices)
        return out, self._pack_state(final)

    def _check_input(self, x: Tensor, packed: bool = False) -> None:
        """torch's check_input: dtype, then number of dimensions, then feature size."""
        weight = self.weight_ih_l0
        if x.dtype != weight.dtype and not _autocast_enabled(x.device.type):
            # "RNN" for every cell, as torch says it.
            raise ValueError(
                f"RNN input dtype ({x.dtype}) does not match weight dtype ({weight.dtype}). "
                f"Convert input: input.to({weight.dtype}), or convert model: model.to({x.dtype})"
            )
        expected_dim = 2 if packed else 3
        if x.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {x.dim()}")
        if x.size(-1) != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {x.size(-1)}"
            )

    def _initial_states(self, batch: int, x: Tensor, states: Optional[State]) -> State:
        """Zero states like ``x``, or the caller's after a shape check.

        Each returned tensor is ``(num_layers * num_directions, batch, size)`` with
        the sizes of :meth:`_state_sizes`.
        """
        layers = self.num_layers * self.num_directions
        sizes = self._state_sizes()
        if states is None:
            return tuple(x.new_zeros(layers, batch, size) for size in sizes)
        # torch names the tensors hidden[0] and hidden[1] only for the LSTM.
        names = ["hidden"] if len(sizes) == 1 else ["hidden[0]", "hidden[1]"]
        for s, size, name in zip(states, sizes, names):
            expected = (layers, batch, size)
            if tuple(s.shape) != expected:
                raise RuntimeError(f"Expected {name} size {expected}, got {list(s.shape)}")
        return states

    def _run(
        self, x: Tensor, states: State, lengths: Optional[Tensor]
    ) -> Tuple[Tensor, State]:
        """All layers over a time-major padded batch.

        ``h_size`` is ``hidden_size``, or ``proj_size`` for an LSTM with projections.

        Args:
            x: ``(seq, batch, input_size)``.
            states: initial states, each ``(num_layers * num_directions, batch, size)``
                with the sizes of :meth:`_state_sizes`.
            lengths: ``(batch,)`` valid length of every sequence, or ``None``
                when all span ``seq`` steps (no masking needed).

        Returns:
            ``(output, final)``: ``output`` ``(seq, batch, num_directions * h_size)``
            from the last layer, zero past each sequence's length; ``final`` the
            states after each sequence's last valid step, shaped as ``states``.
        """
        seq_len = x.size(0)
        mask = rev_index = None
        if lengths is not None:
            mask = (torch.arange(seq_len, device=x.device).unsqueeze(1) < lengths).unsqueeze(2)
            rev_index = _reverse_index(lengths, seq_len)

        finals: List[State] = []
        layer_input = x
        for layer in range(self.num_layers):
            k = layer * self.num_directions
            # {"weight_ih": ..., "weight_hh": ..., ...} per direction; absent biases
            # and projections read as None.
            params = [
                {n.rsplit("_l", 1)[0]: getattr(self, n) for n in self._all_weights[k + d]}
                for d in range(self.num_directions)
            ]
            fwd = params[0]
            # The whole sequence's input projection in one matmul per direction;
            # only the recurrence has to go step by step.
            gi = F.linear(layer_input, fwd["weight_ih"], fwd.get("bias_ih"))
            if self.num_directions == 1:
                step = self._step_with(fwd.get("weight_hr"))
                out, final = _run_direction(
                    step, gi, tuple(s[k] for s in states), fwd["weight_hh"], fwd.get("bias_hh"), mask
                )
                finals.append(final)
                layer_input = out
            else:
                bwd = params[1]
                gi_b = F.linear(_reverse(layer_input, rev_index), bwd["weight_ih"], bwd.get("bias_ih"))

                def stacked(name: str) -> Optional[Tensor]:
                    return None if name not in fwd else _stack_directions(fwd[name], bwd[name])

                out, final = _run_direction(
                    self._step_with(stacked("weight_hr")),
                    torch.stack([gi, gi_b], 1),
                    tuple(s[k : k + 2] for s in states),
                    stacked("weight_hh"),
                    stacked("bias_hh"),
                    mask,
                )
                finals.append(tuple(f[0] for f in final))
                finals.append(tuple(f[1] for f in final))
                layer_input = torch.cat([out[:, 0], _reverse(out[:, 1], rev_index)], 2)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        stacked_finals = tuple(torch.stack(parts) for parts in zip(*finals))
        return layer_input, stacked_finals

    def _step_with(self, w_hr: Optional[Tensor]) -> StepFn:
        """The cell's step function, bound to the projection ``W_hr`` if there is one."""
        return self._step if w_hr is None else partial(self._step, w_hr=w_hr)


class ElmanRNN(_RecurrentBase):
    r"""Multi-layer Elman RNN, a drop-in for :class:`torch.nn.RNN`.

    For each element of the input sequence each layer computes
    ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (or ``relu``).

    Args:
        input_size: features of the input ``x``.
        hidden_size: features of the hidden state ``h``.
        num_layers: number of stacked recurrent layers.
        nonlinearity: ``'tanh'`` or ``'relu'``.
        bias: if ``False``, no ``b_ih`` / ``b_hh``.
        batch_first: if ``True``, batched input and output are
            ``(batch, seq, feature)`` instead of ``(seq, batch, feature)``;
            ``h_0`` / ``h_n`` are unaffected.
        dropout: if non-zero, dropout with this probability on the outputs of
            every layer except the last, in training mode only.
        bidirectional: if ``True``, each layer also runs backwards in time.
        device, dtype: for the parameters.
        proj_size: not supported (only :class:`LSTM` projects); passing it at
            all raises ``ValueError``, as torch does.

    Inputs: ``input, h_0``
        * **input**: ``(seq, input_size)`` unbatched, ``(seq, batch, input_size)``,
          ``(batch, seq, input_size)`` with ``batch_first``, or a
          :class:`~torch.nn.utils.rnn.PackedSequence`.
        * **h_0**: ``(num_layers * num_directions, batch, hidden_size)``
          (``(num_layers * num_directions, hidden_size)`` unbatched), in the
          caller's batch order even for a packed input; zeros if omitted.

    Outputs: ``output, h_n``
        * **output**: ``(seq, batch, num_directions * hidden_size)`` (or
          ``(batch, seq, ...)`` with ``batch_first``, ``(seq, ...)`` unbatched),
          the last layer's ``h_t`` for every ``t``; a ``PackedSequence`` with the
          input's ``batch_sizes`` and indices for a packed input.
        * **h_n**: ``(num_layers * num_directions, batch, hidden_size)``, each
          sequence's state after its own last step (after step 0 for the
          reverse direction).

    Attributes:
        weight_ih_l{k}{_reverse}: ``(hidden_size, input_size)`` for ``k = 0``,
            else ``(hidden_size, num_directions * hidden_size)``.
        weight_hh_l{k}{_reverse}: ``(hidden_size, hidden_size)``.
        bias_ih_l{k}{_reverse}, bias_hh_l{k}{_reverse}: ``(hidden_size,)``.
    """

    _gates = 1
    _input_dim_error = "RNN: Expected input to be 2D or 3D, got {}D tensor instead"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        proj_size=_NO_PROJ,
    ) -> None:
        if proj_size is not _NO_PROJ:
            raise ValueError(_PROJ_ONLY_LSTM)
        steps = {"tanh": _rnn_tanh_step, "relu": _rnn_relu_step}
        if nonlinearity not in steps:
            raise ValueError(
                f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        super().__init__(
            "RNN_" + nonlinearity.upper(),
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            device=device,
            dtype=dtype,
        )
        self.nonlinearity = nonlinearity
        # An instance attribute, so it is not bound as a method.
        self._step = steps[nonlinearity]

    def forward(
        self, input: Union[Tensor, PackedSequence], hx: Optional[Tensor] = None
    ) -> Tuple[Union[Tensor, PackedSequence], Tensor]:
        """Returns ``(output, h_n)``; see the class docstring for shapes."""
        return super().forward(input, hx)


RNN = ElmanRNN


class LSTM(_RecurrentBase):
    r"""Multi-layer LSTM, a drop-in for :class:`torch.nn.LSTM`, projections included.

    Each layer computes, with the gates stacked in the order ``i, f, g, o``::

        i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)
        f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
        g_t = tanh   (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
        o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)

    With ``proj_size > 0`` (an LSTM with projections, Sak et al. 2014) ``h_t`` is
    projected down, ``h_t = W_hr (o_t * tanh(c_t))``: ``h``, the output and
    ``W_h*`` shrink to ``proj_size`` while ``c`` keeps ``hidden_size``.
    Below ``H_out`` is ``proj_size`` if it is non-zero, else ``hidden_size``.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout,
        bidirectional, device, dtype: as for :class:`ElmanRNN`.
        proj_size: if ``> 0``, project ``h`` to this size; must be smaller
            than ``hidden_size``. Default ``0``: no projection.

    Inputs: ``input, (h_0, c_0)``
        * **input**: ``(seq, input_size)`` unbatched, ``(seq, batch, input_size)``,
          ``(batch, seq, input_size)`` with ``batch_first``, or a
          :class:`~torch.nn.utils.rnn.PackedSequence`.
        * **h_0**: ``(num_layers * num_directions, batch, H_out)`` and
          **c_0**: ``(num_layers * num_directions, batch, hidden_size)``
          (without the batch dimension when unbatched), in the caller's batch
          order; zeros if ``None``.

    Outputs: ``output, (h_n, c_n)``
        * **output**: ``(seq, batch, num_directions * H_out)`` (or
          ``(batch, seq, ...)`` with ``batch_first``, ``(seq, ...)`` unbatched),
          or a ``PackedSequence`` for a packed input.
        * **h_n**: ``(num_layers * num_directions, batch, H_out)`` and
          **c_n**: ``(num_layers * num_directions, batch, hidden_size)``,
          at each sequence's own last step (step 0 for the reverse direction).

    Attributes:
        weight_ih_l{k}{_reverse}: ``(4 * hidden_size, input_size)`` for ``k = 0``,
            else ``(4 * hidden_size, num_directions * H_out)``.
        weight_hh_l{k}{_reverse}: ``(4 * hidden_size, H_out)``.
        bias_ih_l{k}{_reverse}, bias_hh_l{k}{_reverse}: ``(4 * hidden_size,)``.
        weight_hr_l{k}{_reverse}: ``(proj_size, hidden_size)``, only with
            ``proj_size > 0``.
    """

    _gates = 4
    _step = staticmethod(_lstm_step)
    _input_dim_error = "LSTM: Expected input to be 2D or 3D, got {}D instead"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            "LSTM",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device,
            dtype,
        )

    def _state_sizes(self) -> Tuple[int, ...]:
        return (self.proj_size if self.proj_size > 0 else self.hidden_size, self.hidden_size)

    def _pack_state(self, states: Tuple[Tensor, ...]):
        return states[0], states[1]

    def _unpack_state(self, hx) -> Tuple[Tensor, ...]:
        if not (isinstance(hx, (tuple, list)) and len(hx) == 2 and all(isinstance(s, Tensor) for s in hx)):
            raise TypeError("LSTM: hx should be a tuple (h_0, c_0) of two Tensors")
        return (hx[0], hx[1])

    def _check_state_dims(self, states: State, batched: bool) -> None:
        want = 3 if batched else 2
        if any(s.dim() != want for s in states):
            shape = "batched 3-D" if batched else "unbatched 2-D"
            raise RuntimeError(
                f"For {shape} input, hx and cx should also be {want}-D but got "
                f"({states[0].dim()}-D, {states[1].dim()}-D) tensors"
            )

    def forward(
        self,
        input: Union[Tensor, PackedSequence],
        hx: Optional[Tuple[Tensor, Tensor]] = None,
    ) -> Tuple[Union[Tensor, PackedSequence], Tuple[Tensor, Tensor]]:
        """Returns ``(output, (h_n, c_n))``; see the class docstring for shapes."""
        return super().forward(input, hx)


class GRU(_RecurrentBase):
    r"""Multi-layer GRU, a drop-in for :class:`torch.nn.GRU`.

    Each layer computes, with the gates stacked in the order ``r, z, n``::

        r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout,
        bidirectional, device, dtype, proj_size: as for :class:`ElmanRNN`.

    Inputs and outputs are those of :class:`ElmanRNN`: ``input, h_0`` ->
    ``output, h_n``.

    Attributes:
        weight_ih_l{k}{_reverse}: ``(3 * hidden_size, input_size)`` for ``k = 0``,
            else ``(3 * hidden_size, num_directions * hidden_size)``.
        weight_hh_l{k}{_reverse}: ``(3 * hidden_size, hidden_size)``.
        bias_ih_l{k}{_reverse}, bias_hh_l{k}{_reverse}: ``(3 * hidden_size,)``.
    """

    _gates = 3
    _step = staticmethod(_gru_step)
    _input_dim_error = "GRU: Expected input to be 2D or 3D, got {}D instead"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        proj_size=_NO_PROJ,
    ) -> None:
        if proj_size is not _NO_PROJ:
            raise ValueError(_PROJ_ONLY_LSTM)
        super().__init__(
            "GRU",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            device=device,
            dtype=dtype,
        )

    def forward(
        self, input: Union[Tensor, PackedSequence], hx: Optional[Tensor] = None
    ) -> Tuple[Union[Tensor, PackedSequence], Tensor]:
        """Returns ``(output, h_n)``; see the class docstring for shapes."""
        return super().forward(input, hx)
