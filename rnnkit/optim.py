"""Adam(W) for a large embedding, touching only the rows a batch uses, with dense Adam's result.

Dense Adam moves every row of an embedding at every step: a row a batch did not use has a zero
gradient, but its moments still decay and its momentum still moves it. So each step pays for a
dense gradient (zero-fill and scatter), its norm and an Adam pass over the whole table, and the
cost grows with the vocabulary: at NSMC's model size (256 wide) this embedding work alone measured
7.1 ms per step at 24,102 rows and 26 ms at 50,000. torch's ``SparseAdam`` is cheap but changes
the optimizer ("lazy Adam": unused rows stand still and their moments do not decay), and it learned
measurably worse on NSMC (BENCHMARKS.md, "CPU speed").

:class:`RowAdam` defers instead of dropping. A row no batch uses between steps ``s`` and ``t`` is
read by no forward pass in between, so its missed updates can wait until a forward pass looks it
up again (a pre-hook on the embedding, :meth:`RowAdam.attach`) or until :meth:`RowAdam.flush`
brings every row up to date, before evaluation or a checkpoint. With a zero gradient the moments
only decay (``m * b1**k``, ``v * b2**k``), so the update Adam makes ``k`` steps after ``s`` is
``a_k * m_s / (b_k * sqrt(v_s) + eps)`` with per-step scalars ``a_k = lr * b1**k / (1 - b1**n)``
and ``b_k = b2**(k/2) / sqrt(1 - b2**n)`` (``n``: that step's count, for the bias corrections).
``b_k`` changes slowly next to ``a_k``, which fades as ``0.9**k``, so the missed updates sum to
``A * m_s / (A / B * sqrt(v_s) + eps)`` with ``A = sum(a_k)`` and ``B = sum(a_k / b_k)``: exact
when ``eps`` is 0 or ``b_k`` constant, and two float64 numbers per step ``s`` that each step
extends (the last few thousand only: older terms fade below float64's reach). AdamW's decoupled
weight decay multiplies every row by ``1 - lr * wd`` at every step, used or not; a third table
keeps the log of that product and the sums are taken relative to it. Over 60 NSMC training steps
in fp32 the losses stayed within 5.4e-7 of dense Adam's (tests/test_optim.py holds the agreement on toy data).
"""
from __future__ import annotations

import math

import torch


class RowAdam(torch.optim.Optimizer):
    """``torch.optim.AdamW`` (Adam when ``weight_decay`` is 0) for parameters with row-sparse gradients.

    ``params``: 2-D tensors of shape ``(rows, dim)`` whose ``.grad`` is a sparse COO tensor
    (an ``nn.Embedding(..., sparse=True)``) or dense. Call :meth:`flush` before anything reads
    all rows (evaluation, saving, averaging); :meth:`state_dict` flushes by itself and saves
    torch's Adam layout (``step``, ``exp_avg``, ``exp_avg_sq``), so a checkpoint loads into
    either optimizer.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 < betas[1] < 1):
            raise ValueError(f"RowAdam: invalid lr {lr}, betas {betas}, eps {eps} or weight_decay {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self._rows: dict = {}  # per parameter: (step, rows, weight, m, v, moments unwritten) of the last forward
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"RowAdam takes (rows, dim) parameters; got shape {tuple(p.shape)}")

    def _state(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        if "last" not in state:
            step = int(state["step"]) if "step" in state else 0
            state.setdefault("exp_avg", torch.zeros_like(p, memory_format=torch.preserve_format))
            state.setdefault("exp_avg_sq", torch.zeros_like(p, memory_format=torch.preserve_format))
            state["step"] = torch.tensor(float(step))
            # the step each row was last brought up to date at, and per such step the summed
            # factor of the updates it has missed since (see the module docstring)
            state["last"] = torch.full((p.shape[0],), step, dtype=torch.long, device=p.device)
            state["missed"] = torch.zeros(max(64, 2 * step + 2), 2, dtype=torch.float64, device=p.device)
            # log of the weight decay's product up to each step
            state["log_decay"] = torch.zeros(len(state["missed"]), dtype=torch.float64, device=p.device)
        return state

    @staticmethod
    def _catch_up(p, state, rows, upto: int, group: dict):
        """Rows ``rows`` of p and of its moments as dense Adam has them after step ``upto``, and
        whether any of them was behind."""
        (beta1, beta2), eps = group["betas"], group["eps"]
        last = state["last"].index_select(0, rows)
        m, v = state["exp_avg"].index_select(0, rows), state["exp_avg_sq"].index_select(0, rows)
        weight = p.detach().index_select(0, rows)
        if bool((last == upto).all()):
            return weight, m, v, False
        # the missed steps sum to a * m / (b * sqrt(v) + eps) with b = a / a_b (module docstring)
        a, a_b = state["missed"].index_select(0, last).to(p.dtype).unbind(1)
        a, a_b = a.unsqueeze(1), a_b.unsqueeze(1)
        weight -= (m * (a * a_b)).div_((v.sqrt() * a).add_(a_b, alpha=eps).clamp_(min=1e-30))
        log_decay = state["log_decay"]
        if bool(log_decay[upto] != 0):
            weight *= torch.exp(log_decay[upto] - log_decay.index_select(0, last)).to(p.dtype).unsqueeze(1)
        k = (upto - last).to(p.dtype).unsqueeze(1)
        return weight, m * torch.pow(beta1, k), v * torch.pow(beta2, k), True

    def _bring(self, p, group, rows) -> None:
        """Bring rows ``rows`` (sorted, unique) of p up to date with the last step, and keep them and their
        moments for the next :meth:`step`, which updates the same rows. The moments are written back
        by that step, or by :meth:`_commit` if something else comes first."""
        self._commit(p)
        state = self._state(p)
        t = int(state["step"])
        weight, m, v, behind = self._catch_up(p, state, rows, t, group)
        if behind:
            p.index_copy_(0, rows, weight)
        self._rows[p] = (t, rows, weight, m, v, behind)

    def _commit(self, p) -> None:
        """Write back the caught-up moments :meth:`_bring` kept, if no step took them."""
        kept = self._rows.pop(p, None)
        if kept is not None and kept[5]:
            t, rows, _, m, v, _ = kept
            state = self.state[p]
            state["exp_avg"].index_copy_(0, rows, m)
            state["exp_avg_sq"].index_copy_(0, rows, v)
            state["last"][rows] = t

    def attach(self, module: torch.nn.Module) -> list:
        """Hook ``module`` (an ``nn.Embedding`` over one of this optimizer's parameters, ``sparse=True``)
        so that a forward pass first brings the rows it looks up up to date, and its gradient arrives
        with repeated rows summed (cheaper than torch's ``coalesce``, which sorts). Returns the handles."""
        group = next(g for g in self.param_groups if any(p is module.weight for p in g["params"]))

        @torch.no_grad()
        def before_forward(mod, args):
            self._bring(mod.weight, group, torch.unique(args[0]))

        @torch.no_grad()
        def after_backward(p):
            grad, seen = p.grad, self._rows.get(p)
            if grad is None or not grad.is_sparse or grad.is_coalesced() or seen is None:
                return
            rows, index = seen[1], grad._indices()[0]
            at = torch.searchsorted(rows, index).clamp_(max=len(rows) - 1)
            if not bool((rows.index_select(0, at) == index).all()):
                return  # rows the last forward did not look up: leave it to coalesce()
            values = torch.zeros(len(rows), p.shape[1], dtype=grad.dtype, device=grad.device)
            values.index_add_(0, at, grad._values())
            p.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), values, p.shape, is_coalesced=True,
                                             check_invariants=False)

        return [module.register_forward_pre_hook(before_forward),
                module.weight.register_post_accumulate_grad_hook(after_backward)]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            decay = 1 - lr * group["weight_decay"]
            if decay <= beta1 / math.sqrt(beta2):  # the missed steps' sums would grow instead of fading
                raise ValueError(f"RowAdam: lr * weight_decay = {1 - decay:g} is too large for deferred updates")
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state(p)
                t = int(state["step"]) + 1
                grad = p.grad
                if grad.is_sparse:
                    grad = grad.coalesce()
                    rows, values = grad.indices()[0], grad.values()
                else:
                    rows, values = torch.arange(p.shape[0], device=p.device), grad
                seen = self._rows.get(p)
                if seen is not None and seen[0] == t - 1 and torch.equal(seen[1], rows):
                    weight, m, v = seen[2:5]
                    del self._rows[p]
                else:
                    self._commit(p)
                    weight, m, v, _ = self._catch_up(p, state, rows, t - 1, group)
                m.mul_(beta1).add_(values, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(values, values, value=1 - beta2)
                bias1, bias2 = 1 - beta1 ** t, 1 - beta2 ** t
                denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)
                if decay != 1:
                    weight.mul_(decay)
                weight.addcdiv_(m, denom, value=-lr / bias1)
                p.index_copy_(0, rows, weight)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                state["last"][rows] = t
                self._extend(state, t, lr / bias1, math.sqrt(bias2), beta1, beta2, decay)
                state["step"] = torch.tensor(float(t))
        return loss

    @staticmethod
    def _extend(state, t: int, size: float, bias2_sqrt: float, beta1: float, beta2: float, decay: float) -> None:
        """Step ``t`` (step size ``lr / (1 - b1**t)``) was missed by every row last brought up to date
        before it: add its terms."""
        if t + 1 >= len(state["missed"]):
            for key in ("missed", "log_decay"):
                grown = state[key].new_zeros((2 * len(state[key]), *state[key].shape[1:]))
                grown[:len(state[key])] = state[key]
                state[key] = grown
        missed, log_decay = state["missed"], state["log_decay"]
        log_decay[t] = log_decay[t - 1] + math.log(decay)
        # a row last up to date at s = 0 .. t-1 missed step t by t - s steps; its terms are taken
        # relative to the decay it had at s, and the catch-up multiplies by the decay since s.
        # They fade at least as fast as fade ** (t - s): older ones would add nothing to a float64
        # sum (below 1e-300 of it), so each step touches at most `window` of them.
        log_beta1 = math.log(beta1) if beta1 > 0 else -math.inf
        log_r = log_beta1 - 0.5 * math.log(beta2)  # r = b1 / sqrt(b2), the slower of the two fades
        window = min(t, int(700 / (math.log(decay) - log_r)) + 1)
        ages = torch.arange(window, 0, -1, dtype=torch.float64, device=missed.device)
        relative = log_decay[t - window:t] - log_decay[t]
        missed[t - window:t, 0] += size * torch.exp(ages * log_beta1 + relative)
        missed[t - window:t, 1] += size * bias2_sqrt * torch.exp(ages * log_r + relative)

    @torch.no_grad()
    def flush(self) -> None:
        """Bring every row up to date: the weights and moments dense Adam would have now."""
        for group in self.param_groups:
            for p in group["params"]:
                self._commit(p)
                state = self.state.get(p)
                if not state or "last" not in state:
                    continue  # no step yet: nothing deferred
                behind = torch.nonzero(state["last"] < int(state["step"])).squeeze(1)
                if len(behind):  # only those: a second flush (the checkpoint's) copies nothing
                    self._bring(p, group, behind)
                    self._commit(p)

    def state_dict(self) -> dict:
        self.flush()
        out = super().state_dict()
        # torch packs the live state dicts: copy them without the bookkeeping
        out["state"] = {k: {n: x for n, x in s.items() if n not in ("last", "missed", "log_decay")}
                        for k, s in out["state"].items()}
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        self._rows.clear()
        super().load_state_dict(state_dict)
        for s in self.state.values():  # rebuilt from "step" on the next use
            for key in ("last", "missed", "log_decay"):
                s.pop(key, None)
