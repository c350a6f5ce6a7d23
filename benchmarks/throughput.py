"""Training and inference speed of rnnkit: tokens/s and GFLOP/s, before vs after its fast paths.

    python benchmarks/throughput.py --data-dir ../shared/data [--device cpu|cuda] [--sizes surnames nsmc] [--book]

Model sizes: surnames (chars, embedding 64, hidden 192, batch 64) and nsmc (issue 12's NSMC size,
`--config nsmc-fast`: kiwi morphemes, embedding 256, one layer of hidden 160, maxmean pooling, batch 128,
on the first 20,000 training reviews); cells rnn, lstm, gru, all bidirectional. Every number counts real tokens only (no padding).

Training: `--batches` length-bucketed batches (`BatchSampler`) through `rnnkit.trainer.train_epoch`,
from the same initial weights, in three configurations timed in interleaved rounds, best of 3:

- before: the code before the fast paths: `kernel="packed"` (pack_padded_sequence), fp32,
  dense embedding gradients, `torch.nn.Dropout`, and the optimizer's per-tensor loop (`foreach=False`);
- fp32: rnnkit's defaults in fp32: the auto kernel (rnnkit.padded), fused optimizer, rnnkit's Dropout;
- rnnkit: rnnkit's defaults, precision included (bf16 autocast on a CPU with native bf16).

Each row gives tokens/s, the speedup of fp32 and rnnkit over before, and achieved GFLOP/s: the
useful FLOPs of :func:`train_flops` over the seconds, as a share of the GEMM peak measured at the start
of the run (2048 x 2048 `a @ b`, fp32 and bf16, same thread count): the bf16 peak for a configuration
that trains under bf16 autocast, else the fp32 one.

Also per row:
- plain: the rnnkit configuration in a bare forward / loss / backward / clip / step loop over batches
  cut into tensors before the clock starts; rnnkit's overhead is plain_rate / rnnkit_rate - 1;
- inference: `rnnkit.predict.predict_proba` over the training split with rnnkit's model in the
  arithmetic a run predicts in (its training precision: bf16 on a CPU with native bf16), with the
  before model (packed, fp32), and a bare loop in rnnkit's arithmetic, best of 5;
- on CUDA, the rnnkit configuration under `--amp` autocast modes (bf16, fp16), to decide where
  mixed precision pays;
- with `--book`: the style of *NLP with PyTorch* ch. 6 on `--book-batches` batches: a Dataset whose
  `__getitem__` tokenizes and vectorizes one row (padded to the longest text in the data), a
  DataLoader, and a unidirectional RNN that steps a cell in a Python loop over every time step, the
  last state gathered by a loop over the batch; compared with rnnkit running the same
  unidirectional model.

Results go to benchmarks/results/throughput-<device>[-<tag>].json.
"""

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import gemm_peak, save  # noqa: E402

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def sizes(data_dir):
    from rnnkit.config import Config, resolve_config

    return {
        "surnames": Config(dataset="surnames", data_dir=data_dir, embedding_dim=64, hidden_size=192, head_hidden=192,
                           batch_size=64, progress=False),
        # issue 12's NSMC size: one layer, as the NSMC default was until the twelfth session
        "nsmc": resolve_config("nsmc-fast", {"data_dir": data_dir, "progress": False}),
    }


def load(cfg, max_train):
    from rnnkit.data import Examples, Splits, load_dataset
    from rnnkit.trainer import prepare

    splits = load_dataset(cfg.dataset, cfg.data_dir, progress=False)
    if max_train and len(splits.train) > max_train:
        splits = Splits(Examples(splits.train.texts[:max_train], splits.train.labels[:max_train]),
                        Examples(splits.val.texts[:5000], splits.val.labels[:5000]),
                        Examples(splits.test.texts[:10], splits.test.labels[:10]), name=splits.name)
    _, vectorizer, data = prepare(cfg, splits, log=lambda m: None)
    return splits, vectorizer, data


def timed(fn, device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, out


def train_flops(cfg, num_classes, tokens, sequences):
    """Useful FLOPs of one training pass over ``sequences`` holding ``tokens`` real tokens.

    Forward, per real token: each layer and direction multiplies its input (I values) and previous
    state (H) by G*H gate rows, 2*G*H*(I+H) FLOPs, with G = 1 (rnn), 4 (lstm), 3 (gru) and
    I = embedding_dim in layer 0, D*H above it. Per sequence: the head, fc1 2*in*head_hidden
    (in = D*H, twice that for maxmean pooling) and fc2 2*head_hidden*num_classes. The backward
    pass costs two forwards (input and weight gradients), so training is 3x forward. Padding,
    gate nonlinearities, embedding lookups, pooling and the optimizer step count nothing.
    """
    G, H, D = GATES[cfg.cell], cfg.hidden_size, 2 if cfg.bidirectional else 1
    per_token = sum(D * 2 * G * H * ((cfg.embedding_dim if layer == 0 else D * H) + H)
                    for layer in range(cfg.num_layers))
    head_in = D * H * (2 if cfg.pooling == "maxmean" else 1)
    per_sequence = 2 * head_in * cfg.head_hidden + 2 * cfg.head_hidden * num_classes
    return 3 * (tokens * per_token + sequences * per_sequence)


def make_model(cfg, vocab_size, num_classes, device, before=False):
    """rnnkit's model, seeded so every configuration starts from the same weights.

    ``before``: with ``torch.nn.Dropout`` in place of rnnkit's, as the model was before.
    """
    import torch

    from rnnkit.model import SequenceClassifier

    torch.manual_seed(0)
    model = SequenceClassifier.from_config(cfg, vocab_size, num_classes)
    if before:
        model.embedding_dropout = torch.nn.Dropout(model.embedding_dropout.p)
        model.head_dropout = torch.nn.Dropout(model.head_dropout.p)
    return model.to(device)


def setup(model, cfg, device, before=False):
    """The optimizer and autocast dtype as `rnnkit.train` sets them up; ``before``: as it did before."""
    import torch

    from rnnkit.trainer import autocast_dtype, model_optimizer, row_updates

    if before:
        kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop,
                "sgd": torch.optim.SGD}[cfg.optimizer]
        momentum = {"momentum": cfg.momentum} if cfg.optimizer in ("rmsprop", "sgd") else {}
        return kind(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False, **momentum), None
    return model_optimizer(cfg, model, row_updates(cfg, model, device)), autocast_dtype(cfg, device)


def rnnkit_train(model, split, batches, cfg, device, before=False):
    """One timed pass: `rnnkit.trainer.train_epoch` over ``batches``."""
    import torch
    from torch import nn

    from rnnkit.distributed import World
    from rnnkit.trainer import train_epoch

    optimizer, amp = setup(model, cfg, device, before)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    split = split.to(device)  # as rnnkit.train does: on a GPU the split is held there
    return lambda: train_epoch(model, split, batches, optimizer, loss_fn, cfg.clip_grad, device, World(), amp,
                               scaler)


def plain_train(model, split, batches, cfg, device):
    """The same work as `rnnkit_train` in a bare loop over batches cut before the clock starts."""
    import torch
    from torch import nn

    from rnnkit.predict import autocast
    from rnnkit.trainer import clip_grad_norm

    tensors = []
    for index in batches:
        ids, lengths, y = split.batch(index)
        tensors.append((ids.to(device), lengths, y.to(device)))
    optimizer, amp = setup(model, cfg, device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    params = list(model.parameters())

    def run():
        model.train()
        for ids, lengths, y in tensors:
            with autocast(device, amp):
                loss = loss_fn(model(ids, lengths).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad:
                clip_grad_norm(params, cfg.clip_grad)
            optimizer.step()
    return run


class BookDataset:
    """Per-row access as in the book: tokenize and vectorize one text in ``__getitem__``."""

    def __init__(self, texts, labels, vectorizer, max_len):
        self.texts, self.labels, self.vectorizer, self.max_len = texts, labels, vectorizer, max_len

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        import torch

        v = self.vectorizer
        tokens = v.tokenizer(self.texts[i])[: (v.max_len or 10 ** 9)]
        ids = [v.vocab.bos_index, *v.vocab.encode(tokens), v.vocab.eos_index]
        row = torch.zeros(self.max_len, dtype=torch.int64)
        row[: len(ids)] = torch.tensor(ids)
        return {"x": row, "length": len(ids), "y": v.labels._index[self.labels[i]]}


def book_model(cell, vocab_size, num_classes, cfg):
    import torch
    from torch import nn

    cells = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}

    class BookClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=0)
            self.cell = cells[cell](cfg.embedding_dim, cfg.hidden_size)
            self.fc1 = nn.Linear(cfg.hidden_size, cfg.head_hidden)
            self.fc2 = nn.Linear(cfg.head_hidden, num_classes)

        def forward(self, x, lengths):
            x = self.emb(x)
            h = torch.zeros(x.shape[0], cfg.hidden_size, device=x.device)
            c = torch.zeros_like(h)
            states = []
            for t in range(x.shape[1]):  # every step, padding included, as in the book's ElmanRNN
                if cell == "lstm":
                    h, c = self.cell(x[:, t], (h, c))
                else:
                    h = self.cell(x[:, t], h)
                states.append(h)
            states = torch.stack(states, dim=1)
            last = torch.stack([states[b, lengths[b] - 1] for b in range(len(lengths))])  # column_gather
            return self.fc2(torch.dropout(torch.relu(self.fc1(last)), 0.3, self.training))

    return BookClassifier()


def book_loader(splits, vectorizer, split, cfg, limit):
    import torch

    texts, labels = splits[split].texts[:limit], splits[split].labels[:limit]
    longest = max(len(vectorizer.tokenizer(t)) for t in texts) + 2
    if vectorizer.max_len:
        longest = min(longest, vectorizer.max_len + 2)
    ds = BookDataset(texts, labels, vectorizer, longest)
    return torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=split == "train",
                                       generator=torch.Generator().manual_seed(0))


def book_train(model, loader, cfg, device):
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def run():
        model.train()
        tokens = 0
        for batch in loader:
            x, y = batch["x"].to(device), batch["y"].to(device)
            loss = torch.nn.functional.cross_entropy(model(x, batch["length"]), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            tokens += int(batch["length"].sum())
        return tokens
    return run


def book_row(row, cell, splits, vectorizer, train, batches, tokens, cfg, book_batches, device):
    """Book-style training and inference vs rnnkit on the same unidirectional model."""
    import torch

    from rnnkit.predict import predict_proba

    n_vocab, n_classes = len(vectorizer.vocab), len(vectorizer.labels)
    uni = cfg.update({"bidirectional": False})
    model = make_model(uni, n_vocab, n_classes, device)
    rnnkit_train(model, train, batches[:3], uni, device)()
    fn = rnnkit_train(model, train, batches, uni, device)
    row["rnnkit_uni_train_tokens_per_s"] = round(tokens / min(timed(fn, device)[0] for _ in range(2)))
    seconds = min(timed(lambda: predict_proba(model, train.ids, train.lengths, 512, device), device)[0]
                  for _ in range(2))
    row["rnnkit_uni_infer_tokens_per_s"] = round(int(train.lengths.sum()) / seconds)

    book = book_model(cell, n_vocab, n_classes, cfg).to(device)
    loader = book_loader(splits, vectorizer, "train", cfg, book_batches * cfg.batch_size)
    seconds, book_tokens = timed(book_train(book, loader, cfg, device), device)
    row["book_train_tokens_per_s"] = round(book_tokens / seconds)
    vloader = book_loader(splits, vectorizer, "val", cfg, book_batches * cfg.batch_size)

    def book_infer():
        n = 0
        book.eval()
        with torch.no_grad():
            for batch in vloader:
                torch.softmax(book(batch["x"].to(device), batch["length"]), -1)
                n += int(batch["length"].sum())
        return n
    seconds, n = timed(book_infer, device)
    row["book_infer_tokens_per_s"] = round(n / seconds)
    row["speedup_vs_book_train"] = round(row["rnnkit_uni_train_tokens_per_s"] / row["book_train_tokens_per_s"], 1)
    row["speedup_vs_book_infer"] = round(row["rnnkit_uni_infer_tokens_per_s"] / row["book_infer_tokens_per_s"], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", default=["surnames", "nsmc"])
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--batches", type=int, default=100, help="training batches timed per configuration")
    parser.add_argument("--tag", default="", help="suffix for the result file name")
    parser.add_argument("--book", action="store_true", help="also compare with book-style code (slow)")
    parser.add_argument("--book-batches", type=int, default=20, help="the book baseline is slow: fewer batches")
    parser.add_argument("--amp", nargs="*", default=["bf16", "fp16"],
                        help="on CUDA, also time rnnkit training under these autocast modes")
    args = parser.parse_args()

    import torch

    from rnnkit.predict import autocast, precision_name, predict_proba
    from rnnkit.trainer import autocast_dtype
    from rnnkit.vectorizer import BatchSampler

    device = torch.device(args.device)
    peak = {"fp32": gemm_peak(torch.float32, device), "bf16": gemm_peak(torch.bfloat16, device)}
    print(f"GEMM peak, {torch.get_num_threads()} threads: fp32 {peak['fp32']:.1f} GFLOP/s, "
          f"bf16 {peak['bf16']:.1f} GFLOP/s", flush=True)
    rows = []
    for size_name in args.sizes:
        base = sizes(args.data_dir)[size_name]
        splits, vectorizer, data = load(base, 20000 if size_name == "nsmc" else None)
        train = data["train"]
        n_vocab, n_classes = len(vectorizer.vocab), len(vectorizer.labels)
        for cell in args.cells:
            cfg = base.update({"cell": cell})
            configs = {"before": cfg.update({"kernel": "packed", "precision": "fp32", "sparse_embedding": False}),
                       "fp32": cfg.update({"precision": "fp32"}),
                       "rnnkit": cfg}
            batches = list(BatchSampler(train.lengths, cfg.batch_size, shuffle=True, bucket=True, seed=0))
            batches = batches[: args.batches]
            tokens = sum(int(train.lengths[b].sum()) for b in batches)
            flops = train_flops(cfg, n_classes, tokens, sum(len(b) for b in batches))
            row = {"size": size_name, "cell": cell, "batch_size": cfg.batch_size, "train_tokens": tokens,
                   "train_gflop": round(flops / 1e9, 3)}

            # Training: the three configurations and the plain loop, interleaved so drift in CPU
            # speed hits all alike; best of 3.
            runs = {}
            for name, c in configs.items():
                model = make_model(c, n_vocab, n_classes, device, before=name == "before")
                rnnkit_train(model, train, batches[:3], c, device, before=name == "before")()  # warm-up
                runs[name] = rnnkit_train(model, train, batches, c, device, before=name == "before")
            model = make_model(cfg, n_vocab, n_classes, device)
            plain_train(model, train, batches[:3], cfg, device)()
            runs["plain"] = plain_train(model, train, batches, cfg, device)
            best = {name: float("inf") for name in runs}
            for _ in range(3):
                for name, fn in runs.items():
                    best[name] = min(best[name], timed(fn, device)[0])
            for name, seconds in best.items():
                row[f"{name}_train_tokens_per_s"] = round(tokens / seconds)
            for name, c in configs.items():
                dtype = "bf16" if autocast_dtype(c, device) == torch.bfloat16 else "fp32"
                gflops = flops / best[name] / 1e9
                row[f"{name}_train_gflops"] = round(gflops, 2)
                row[f"{name}_train_peak_share"] = round(gflops / peak[dtype], 4)
                row[f"{name}_train_dtype"] = dtype
            for name in ("fp32", "rnnkit"):
                row[f"{name}_speedup_train"] = round(best["before"] / best[name], 2)
            row["rnnkit_overhead_train"] = round(best["rnnkit"] / best["plain"] - 1, 3)

            for amp in args.amp if device.type == "cuda" else []:
                # Mixed precision is on only where this measures faster than fp32.
                c = cfg.update({"amp": amp})
                model = make_model(c, n_vocab, n_classes, device)
                rnnkit_train(model, train, batches[:3], c, device)()
                fn = rnnkit_train(model, train, batches, c, device)
                row[f"rnnkit_{amp}_train_tokens_per_s"] = round(tokens / min(timed(fn, device)[0] for _ in range(3)))
                row[f"rnnkit_{amp}_speedup_train"] = round(row[f"rnnkit_{amp}_train_tokens_per_s"]
                                                           / row["rnnkit_train_tokens_per_s"], 2)

            # Inference over the training split (the surnames validation split takes ~10 ms, too short
            # to time): predict_proba with rnnkit's and the before model, and a bare loop.
            infer_tokens = int(train.lengths.sum())
            model = make_model(cfg, n_vocab, n_classes, device).eval()
            before = make_model(configs["before"], n_vocab, n_classes, device, before=True).eval()
            plain_batches = [(train.ids[b, : int(train.lengths[b].max())].long().to(device), train.lengths[b])
                             for b in BatchSampler(train.lengths, 512, shuffle=False, bucket=True)]

            amp = autocast_dtype(cfg, device)  # what rnnkit.load(run) predicts in
            row["infer_precision"] = precision_name(amp)

            def plain_infer():
                with torch.no_grad(), autocast(device, amp):
                    for ids, lengths in plain_batches:
                        torch.softmax(model(ids, lengths).float(), -1)
            infer = {"rnnkit": lambda: predict_proba(model, train.ids, train.lengths, 512, device, amp),
                     "before": lambda: predict_proba(before, train.ids, train.lengths, 512, device),
                     "plain": plain_infer}
            for fn in infer.values():
                fn()  # warm-up
            best = {name: float("inf") for name in infer}
            for _ in range(5):
                for name, fn in infer.items():
                    best[name] = min(best[name], timed(fn, device)[0])
            for name, seconds in best.items():
                row[f"{name}_infer_tokens_per_s"] = round(infer_tokens / seconds)
            row["rnnkit_speedup_infer"] = round(best["before"] / best["rnnkit"], 2)
            row["rnnkit_overhead_infer"] = round(best["rnnkit"] / best["plain"] - 1, 3)

            if args.book:
                book_row(row, cell, splits, vectorizer, train, batches, tokens, cfg, args.book_batches, device)

            print(f"{size_name:8} {cell:4}  train tok/s: before {row['before_train_tokens_per_s']:,}, "
                  f"fp32 {row['fp32_train_tokens_per_s']:,} ({row['fp32_speedup_train']}x), "
                  f"rnnkit {row['rnnkit_train_tokens_per_s']:,} ({row['rnnkit_speedup_train']}x); GFLOP/s: "
                  + ", ".join(f"{name} {row[f'{name}_train_gflops']} ({row[f'{name}_train_peak_share']:.1%} of "
                              f"{row[f'{name}_train_dtype']} peak)" for name in configs)
                  + f"; infer tok/s: before {row['before_infer_tokens_per_s']:,}, "
                  f"rnnkit {row['rnnkit_infer_tokens_per_s']:,} ({row['rnnkit_speedup_infer']}x); "
                  f"overhead vs plain: train {row['rnnkit_overhead_train']:+.1%}, "
                  f"infer {row['rnnkit_overhead_infer']:+.1%}"
                  + (f"; vs book (unidirectional): train {row['speedup_vs_book_train']}x, "
                     f"infer {row['speedup_vs_book_infer']}x" if args.book else ""), flush=True)
            rows.append(row)
    save(f"throughput-{device.type}" + (f"-{args.tag}" if args.tag else ""), {"command": "benchmarks/throughput.py " + " ".join(sys.argv[1:]),
                                       "gemm_peak_gflops": {k: round(v, 1) for k, v in peak.items()},
                                       "threads": torch.get_num_threads(), "rows": rows})


if __name__ == "__main__":
    main()
