"""Training and inference throughput (real tokens/s): rnnkit vs a plain PyTorch loop vs book-style code.

    python benchmarks/throughput.py --data-dir ../shared/data [--device cpu|cuda] [--sizes surnames nsmc]

For each model size (surnames: chars, embedding 64, BiLSTM-sized hidden 192, batch 64; nsmc: kiwi
morphemes, embedding 256, hidden 160, batch 128, on the first 20,000 training reviews) and each
cell (rnn, lstm, gru), three ways to train and predict:

- rnnkit: `rnnkit.trainer.train_epoch` over a length-bucketed `BatchSampler`, and
  `rnnkit.predict.predict_proba` for inference;
- plain: the same model, the same batches already cut into tensors before the clock starts, and
  a bare forward / loss / backward / clip / step loop;
- book: the style of *NLP with PyTorch* ch. 6: a Dataset whose `__getitem__` tokenizes and
  vectorizes one row (padded to the longest text in the data), a DataLoader, and a unidirectional
  RNN that steps a cell in a Python loop over every time step, with the last state gathered by a
  loop over the batch. It is unidirectional as in the book, so it does about half the recurrent work.

On CUDA, rnnkit training is also timed under `--amp` autocast modes (bf16, fp16), to decide where
mixed precision pays. tokens/s counts real tokens (no padding) processed per second. rnnkit's overhead is
plain_rate / rnnkit_rate - 1, on the same bidirectional model and batches. The book comparison
uses rnnkit with a unidirectional layer, the same work as the book's model. Results go to benchmarks/results/throughput-<device>.json.
"""

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save  # noqa: E402


def sizes(data_dir):
    from rnnkit.config import Config

    return {
        "surnames": Config(dataset="surnames", data_dir=data_dir, embedding_dim=64, hidden_size=192, head_hidden=192,
                           batch_size=64, progress=False),
        "nsmc": Config.for_dataset("nsmc", data_dir=data_dir, progress=False),
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


def rnnkit_train(model, split, batches, cfg, device, amp="off"):
    import torch
    from torch import nn

    from rnnkit.distributed import World
    from rnnkit.trainer import make_optimizer, train_epoch

    optimizer = make_optimizer(cfg, model.parameters())
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    split = split.to(device)  # as rnnkit.train does: on a GPU the split is held there
    return lambda: train_epoch(model, split, batches, optimizer, loss_fn, cfg.clip_grad, device, World(), amp,
                               scaler)


def plain_train(model, split, batches, cfg, device):
    from torch import nn

    from rnnkit.trainer import make_optimizer

    tensors = []
    for index in batches:
        ids, lengths, y = split.batch(index)
        tensors.append((ids.to(device), lengths, y.to(device)))
    optimizer = make_optimizer(cfg, model.parameters())
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def run():
        model.train()
        for ids, lengths, y in tensors:
            loss = loss_fn(model(ids, lengths), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", default=["surnames", "nsmc"])
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--batches", type=int, default=100, help="training batches timed per method")
    parser.add_argument("--book-batches", type=int, default=20, help="the book baseline is slow: fewer batches")
    parser.add_argument("--amp", nargs="*", default=["bf16", "fp16"],
                        help="on CUDA, also time rnnkit training under these autocast modes")
    args = parser.parse_args()

    import torch

    from rnnkit.model import SequenceClassifier
    from rnnkit.predict import predict_proba
    from rnnkit.vectorizer import BatchSampler

    device = torch.device(args.device)
    rows = []
    for size_name in args.sizes:
        base = sizes(args.data_dir)[size_name]
        splits, vectorizer, data = load(base, 20000 if size_name == "nsmc" else None)
        train, val = data["train"], data["val"]
        for cell in args.cells:
            cfg = base.update({"cell": cell})
            torch.manual_seed(0)
            model0 = SequenceClassifier.from_config(cfg, len(vectorizer.vocab), len(vectorizer.labels)).to(device)
            sampler = BatchSampler(train.lengths, cfg.batch_size, shuffle=True, bucket=True, seed=0)
            batches = list(sampler)[: args.batches]
            tokens = sum(int(train.lengths[b].sum()) for b in batches)
            row = {"size": size_name, "cell": cell, "batch_size": cfg.batch_size, "train_tokens": tokens}
            runs = {}
            for name, make in (("rnnkit", rnnkit_train), ("plain", plain_train)):
                model = copy.deepcopy(model0)
                make(model, train, batches[:3], cfg, device)()  # warm-up: allocator, kernels
                runs[name] = make(model, train, batches, cfg, device)
            best = {name: float("inf") for name in runs}
            for _ in range(3):  # interleaved, so drift in CPU speed hits both alike; best of 3
                for name, fn in runs.items():
                    best[name] = min(best[name], timed(fn, device)[0])
            for name, seconds in best.items():
                row[f"{name}_train_tokens_per_s"] = round(tokens / seconds)
            for amp in args.amp if device.type == "cuda" else []:
                # Mixed precision is on only where this measures faster than fp32.
                model = copy.deepcopy(model0)
                rnnkit_train(model, train, batches[:3], cfg, device, amp)()
                fn = rnnkit_train(model, train, batches, cfg, device, amp)
                row[f"rnnkit_{amp}_train_tokens_per_s"] = round(tokens / min(timed(fn, device)[0] for _ in range(3)))
                row[f"rnnkit_{amp}_speedup_train"] = round(row[f"rnnkit_{amp}_train_tokens_per_s"]
                                                           / row["rnnkit_train_tokens_per_s"], 2)
            # Inference over the training split: the validation split of surnames takes ~10 ms, too
            # short to time.
            val = train
            val_tokens = int(val.lengths.sum())
            model = copy.deepcopy(model0).eval()
            predict_proba(model, val.ids[:256], val.lengths[:256], 512, device)
            plain_batches = [(val.ids[b, : int(val.lengths[b].max())].long().to(device), val.lengths[b])
                             for b in BatchSampler(val.lengths, 512, shuffle=False, bucket=True)]

            def plain_infer():
                with torch.no_grad():
                    for ids, lengths in plain_batches:
                        torch.softmax(model(ids, lengths), -1)
            infer = {"rnnkit": lambda: predict_proba(model, val.ids, val.lengths, 512, device), "plain": plain_infer}
            best = {name: float("inf") for name in infer}
            for _ in range(5):
                for name, fn in infer.items():
                    best[name] = min(best[name], timed(fn, device)[0])
            for name, seconds in best.items():
                row[f"{name}_infer_tokens_per_s"] = round(val_tokens / seconds)
            # rnnkit with a unidirectional layer: the same work as the book's model, for a fair ratio.
            uni = cfg.update({"bidirectional": False})
            torch.manual_seed(0)
            model = SequenceClassifier.from_config(uni, len(vectorizer.vocab), len(vectorizer.labels)).to(device)
            fn = rnnkit_train(model, train, batches[:3], uni, device)
            fn()
            fn = rnnkit_train(model, train, batches, uni, device)
            row["rnnkit_uni_train_tokens_per_s"] = round(tokens / min(timed(fn, device)[0] for _ in range(2)))
            model.eval()
            seconds = min(timed(lambda: predict_proba(model, val.ids, val.lengths, 512, device), device)[0]
                          for _ in range(2))
            row["rnnkit_uni_infer_tokens_per_s"] = round(val_tokens / seconds)
            # Book style, on fewer batches.
            book = book_model(cell, len(vectorizer.vocab), len(vectorizer.labels), cfg).to(device)
            loader = book_loader(splits, vectorizer, "train", cfg, args.book_batches * cfg.batch_size)
            seconds, book_tokens = timed(book_train(book, loader, cfg, device), device)
            row["book_train_tokens_per_s"] = round(book_tokens / seconds)
            vloader = book_loader(splits, vectorizer, "val", cfg, args.book_batches * cfg.batch_size)

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
            row["rnnkit_overhead_train"] = round(row["plain_train_tokens_per_s"] / row["rnnkit_train_tokens_per_s"] - 1, 3)
            row["rnnkit_overhead_infer"] = round(row["plain_infer_tokens_per_s"] / row["rnnkit_infer_tokens_per_s"] - 1, 3)
            # Same (unidirectional) model on both sides.
            row["speedup_vs_book_train"] = round(row["rnnkit_uni_train_tokens_per_s"] / row["book_train_tokens_per_s"], 1)
            row["speedup_vs_book_infer"] = round(row["rnnkit_uni_infer_tokens_per_s"] / row["book_infer_tokens_per_s"], 1)
            print(row, flush=True)
            rows.append(row)
    save(f"throughput-{device.type}", {"command": "benchmarks/throughput.py " + " ".join(sys.argv[1:]), "rows": rows})


if __name__ == "__main__":
    main()
