"""rnnkit's from-scratch recurrent layers against torch's fused ones, and two ways to speed them up.

    python benchmarks/backends.py --data-dir ../shared/data [--device cpu|cuda] [--cells rnn lstm gru]

One surnames training epoch (7,680 names, the default model: embedding 64, hidden 192,
bidirectional, max pooling, batch 64) and one inference pass over the same names, same batches,
best of `--repeats`, for these variants of the recurrent layer:

- `torch`: nn.RNN / nn.LSTM / nn.GRU (cuDNN on a GPU, fused ATen kernels on a CPU);
- `scratch`: rnnkit.nn as shipped: one input projection for all time steps, a Python loop over
  the recurrence with one small step function per cell;
- `scratch+script`: the same recurrence as one TorchScript function per cell, so the time loop
  runs in TorchScript's interpreter instead of Python;
- `scratch+compile`: the step (hidden projection, cell, length mask) through torch.compile,
  called once per time step. Its first epoch (the compile) is reported separately.

The two candidate speed-ups live here, not in rnnkit.nn: rnnkit keeps whichever this script
measures fastest. Results go to benchmarks/results/backends-<device>.json.
"""

import argparse
import sys
import time
from pathlib import Path
from typing import List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import save  # noqa: E402

# ---------------------------------------------------------------------------
# Candidate 1: the whole recurrence of one direction as TorchScript, per cell.


@torch.jit.script
def _rnn_loop(gi: torch.Tensor, h: torch.Tensor, w_hh_t: torch.Tensor, b_hh: torch.Tensor,
              mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    outs: List[torch.Tensor] = []
    steps = gi.unbind(0)
    for t in range(len(steps)):
        h = torch.where(mask[t], torch.tanh(steps[t] + torch.matmul(h, w_hh_t) + b_hh), h)
        outs.append(h)
    return torch.stack(outs), h


@torch.jit.script
def _lstm_loop(gi: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_hh_t: torch.Tensor, b_hh: torch.Tensor,
               mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    outs: List[torch.Tensor] = []
    steps = gi.unbind(0)
    for t in range(len(steps)):
        i, f, g, o = (steps[t] + torch.matmul(h, w_hh_t) + b_hh).chunk(4, -1)
        c2 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h2 = torch.sigmoid(o) * torch.tanh(c2)
        h, c = torch.where(mask[t], h2, h), torch.where(mask[t], c2, c)
        outs.append(h)
    return torch.stack(outs), h, c


@torch.jit.script
def _gru_loop(gi: torch.Tensor, h: torch.Tensor, w_hh_t: torch.Tensor, b_hh: torch.Tensor,
              mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    outs: List[torch.Tensor] = []
    hidden = h.size(-1)
    steps = gi.unbind(0)
    for t in range(len(steps)):
        i_rz, i_n = steps[t].split([2 * hidden, hidden], -1)
        h_rz, h_n = (torch.matmul(h, w_hh_t) + b_hh).split([2 * hidden, hidden], -1)
        r, z = torch.sigmoid(i_rz + h_rz).chunk(2, -1)
        n = torch.tanh(i_n + r * h_n)
        h = torch.where(mask[t], n + z * (h - n), h)
        outs.append(h)
    return torch.stack(outs), h


def _prepare(gi, w_hh, b_hh, mask):
    """rnnkit.nn steps both directions together (a leading dimension of 2); follow its layout."""
    if mask is None:
        mask = torch.ones(gi.shape[0], gi.shape[-2], 1, dtype=torch.bool, device=gi.device)
    stacked = w_hh.dim() == 3
    out_mask = mask.unsqueeze(1) if stacked else mask
    return mask, out_mask, w_hh.transpose(-1, -2), b_hh.unsqueeze(1) if stacked else b_hh


def scripted_run_direction(step, gi, state, w_hh, b_hh, mask):
    import rnnkit.nn as rn

    mask, out_mask, w, b_hh = _prepare(gi, w_hh, b_hh, mask)
    if step is rn._lstm_step:
        out, h, c = _lstm_loop(gi, state[0], state[1], w, b_hh, mask)
        final = (h, c)
    elif step is rn._gru_step:
        out, h = _gru_loop(gi, state[0], w, b_hh, mask)
        final = (h,)
    elif step is rn._rnn_tanh_step:
        out, h = _rnn_loop(gi, state[0], w, b_hh, mask)
        final = (h,)
    else:
        raise ValueError("scratch+script covers tanh RNN, LSTM and GRU")
    return out.masked_fill(~out_mask, 0.0), final


# ---------------------------------------------------------------------------
# Candidate 2: torch.compile of one masked step, called per time step.

_COMPILED = {}


def compiled_run_direction(step, gi, state, w_hh, b_hh, mask):
    fn = _COMPILED.get(step)
    if fn is None:
        def masked_step(gi_t, state, w_hh_t, b_hh, keep):
            new = step(gi_t, torch.matmul(state[0], w_hh_t) + b_hh, state)
            return tuple(torch.where(keep, n, o) for n, o in zip(new, state))

        # Batch shapes vary from batch to batch; let it recompile rather than fall back to eager.
        torch._dynamo.config.recompile_limit = 64
        fn = _COMPILED[step] = torch.compile(masked_step, dynamic=True)
    mask, out_mask, w, b_hh = _prepare(gi, w_hh, b_hh, mask)
    outputs = []
    for t, gi_t in enumerate(gi.unbind(0)):
        state = fn(gi_t, state, w, b_hh, mask[t])
        outputs.append(state[0])
    return torch.stack(outputs).masked_fill(~out_mask, 0.0), state


# ---------------------------------------------------------------------------


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_epoch(cfg, data, vectorizer, device, batches) -> tuple[float, float]:
    """Seconds for one training epoch and for one inference pass over the same batches."""
    from torch import nn

    from rnnkit.model import SequenceClassifier
    from rnnkit.trainer import make_optimizer

    torch.manual_seed(0)
    model = SequenceClassifier.from_config(cfg, len(vectorizer.vocab), len(vectorizer.labels)).to(device)
    opt = make_optimizer(cfg, model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    split = data["train"]
    model.train()
    _sync(device)
    started = time.perf_counter()
    for index in batches:
        ids, lengths, y = split.batch(index)
        loss = loss_fn(model(ids.to(device), lengths), y.to(device))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    _sync(device)
    train_s = time.perf_counter() - started
    model.eval()
    started = time.perf_counter()
    with torch.no_grad():
        for index in batches:
            ids, lengths, _ = split.batch(index)
            model(ids.to(device), lengths)
    _sync(device)
    return train_s, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--variants", nargs="+", default=["torch", "scratch", "scratch+script", "scratch+compile"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import rnnkit
    import rnnkit.nn as rn
    from rnnkit.trainer import prepare
    from rnnkit.vectorizer import BatchSampler

    device = torch.device(args.device)
    base = rnnkit.Config(dataset="surnames", data_dir=args.data_dir, progress=False, device=args.device)
    _, vectorizer, data = prepare(base, log=lambda m: None)
    sampler = BatchSampler(data["train"].lengths, base.batch_size, seed=0)
    sampler.set_epoch(1)
    batches = list(sampler)
    loops = {"scratch": rn._run_direction, "scratch+script": scripted_run_direction,
             "scratch+compile": compiled_run_direction}
    rows = []
    for cell in args.cells:
        row = {"cell": cell}
        for variant in args.variants:
            cfg = base.update({"cell": cell, "backend": "torch" if variant == "torch" else "scratch"})
            rn._run_direction = loops.get(variant, loops["scratch"])
            try:
                first = run_epoch(cfg, data, vectorizer, device, batches)  # warm-up; compiles/scripts
                if variant == "scratch+compile":
                    row["scratch+compile_first_epoch_seconds"] = round(first[0], 2)
                times = [run_epoch(cfg, data, vectorizer, device, batches) for _ in range(args.repeats)]
            finally:
                rn._run_direction = loops["scratch"]
            row[f"{variant}_train_seconds"] = round(min(t for t, _ in times), 3)
            row[f"{variant}_infer_seconds"] = round(min(t for _, t in times), 3)
        for variant in args.variants:
            if variant != "torch" and "torch" in args.variants:
                for kind in ("train", "infer"):
                    row[f"{variant}_over_torch_{kind}"] = round(row[f"{variant}_{kind}_seconds"]
                                                                / row[f"torch_{kind}_seconds"], 2)
        print(row, flush=True)
        rows.append(row)
    save(f"backends-{device.type}", {"command": " ".join(sys.argv), "config": {
        k: getattr(base, k) for k in ("embedding_dim", "hidden_size", "bidirectional", "batch_size", "pooling")},
        "train_examples": len(data["train"]), "batches": len(batches), "rows": rows})


if __name__ == "__main__":
    main()
