"""One training epoch on surnames with the fused `torch` backend and rnnkit's `scratch` one.

    python benchmarks/backends.py --data-dir ../shared/data [--cells rnn lstm gru] [--repeats 2]

Same model size as the default config, same batches; reports seconds per epoch (best of
`--repeats`) and the scratch/torch ratio per cell.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save  # noqa: E402


def epoch_seconds(cfg, data, vectorizer) -> float:
    import torch
    from torch import nn

    from rnnkit.model import SequenceClassifier
    from rnnkit.trainer import make_optimizer
    from rnnkit.vectorizer import BatchSampler

    torch.manual_seed(0)
    model = SequenceClassifier.from_config(cfg, len(vectorizer.vocab), len(vectorizer.labels))
    opt = make_optimizer(cfg, model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    sampler = BatchSampler(data["train"].lengths, cfg.batch_size, seed=0)
    sampler.set_epoch(1)
    model.train()
    started = time.perf_counter()
    for index in sampler:
        ids, lengths, y = data["train"].batch(index)
        loss = loss_fn(model(ids, lengths), y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import rnnkit
    from rnnkit.trainer import prepare

    base = rnnkit.Config(dataset="surnames", data_dir=args.data_dir, progress=False)
    _, vectorizer, data = prepare(base, log=lambda m: None)
    rows = []
    for cell in args.cells:
        row = {"cell": cell}
        for backend in ("torch", "scratch"):
            cfg = base.update({"cell": cell, "backend": backend})
            row[f"{backend}_seconds"] = round(min(epoch_seconds(cfg, data, vectorizer)
                                                  for _ in range(args.repeats)), 2)
        row["scratch_over_torch"] = round(row["scratch_seconds"] / row["torch_seconds"], 2)
        print(row, flush=True)
        rows.append(row)
    save("backends-surnames-epoch", {"command": " ".join(sys.argv), "config": {
        k: getattr(base, k) for k in ("embedding_dim", "hidden_size", "bidirectional", "batch_size", "pooling")},
        "train_examples": len(data["train"]), "rows": rows})


if __name__ == "__main__":
    main()
