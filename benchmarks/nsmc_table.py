"""NSMC: tokenizer x cell x direction on a reduced budget.

    python benchmarks/nsmc_table.py --data-dir ../shared/data --train 20000 --test 10000 --epochs 2

For each tokenizer (kiwi, okt, syllable, sentencepiece) the first `--train` training reviews and
first `--test` test reviews are tokenized once with the cache off (that time gives documents/s),
then every cell (rnn, lstm, gru) is trained uni- and bidirectionally with the NSMC defaults
otherwise. Reports test accuracy, training seconds and tokenization speed.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--tokenizers", nargs="+", default=["kiwi", "okt", "syllable", "sentencepiece"])
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    args = parser.parse_args()

    import rnnkit
    from rnnkit.config import resolve_config
    from rnnkit.data import Examples, Splits, load_dataset
    from rnnkit.tokencache import tokenize_corpus
    from rnnkit.tokenizers import build_tokenizer
    from rnnkit.trainer import tokenizer_settings

    full = load_dataset("nsmc", args.data_dir, progress=False)
    n_val = max(1, args.train // 9)
    splits = Splits(Examples(full.train.texts[: args.train], full.train.labels[: args.train]),
                    Examples(full.val.texts[:n_val], full.val.labels[:n_val]),
                    Examples(full.test.texts[: args.test], full.test.labels[: args.test]), name="nsmc")
    rows = []
    for tok_name in args.tokenizers:
        # nsmc-words: the NSMC defaults without the character branch, which character tokenizers cannot take.
        base = resolve_config("nsmc-words", dict(tokenizer=tok_name, epochs=args.epochs, progress=False,
                                                 data_dir=args.data_dir))
        started = time.perf_counter()
        tokenizer = build_tokenizer(tokenizer_settings(base), splits.train.texts)
        setup = time.perf_counter() - started
        started = time.perf_counter()
        n_docs = 0
        for part in (splits.train, splits.test):
            tokenize_corpus(tokenizer, part.texts, cache=False, progress=False, log=lambda m: None)
            n_docs += len(part)
        docs_per_s = n_docs / (time.perf_counter() - started)
        print(f"{tok_name}: {docs_per_s:,.0f} docs/s (setup/training of the tokenizer {setup:.1f} s)", flush=True)
        for cell in args.cells:
            for bidirectional in (False, True):
                cfg = base.update({"cell": cell, "bidirectional": bidirectional,
                                   "out": str(Path(tempfile.mkdtemp(prefix="nsmc-table-")) / "run")})
                started = time.perf_counter()
                run = rnnkit.train(cfg, splits=splits, log=lambda m: None)
                row = {"tokenizer": tok_name, "cell": cell, "bidirectional": bidirectional,
                       "test_accuracy": run.metrics["test"]["accuracy"], "val_accuracy": run.metrics["val"]["accuracy"],
                       "train_seconds": round(run.metrics["train_seconds"], 1),
                       "run_seconds": round(time.perf_counter() - started, 1),
                       "tokenize_docs_per_s": round(docs_per_s), "tokenizer_setup_seconds": round(setup, 1)}
                print(row, flush=True)
                rows.append(row)
    save("nsmc-table", {"command": " ".join(sys.argv), "train": len(splits.train), "val": len(splits.val),
                        "test": len(splits.test), "epochs": args.epochs, "rows": rows})


if __name__ == "__main__":
    main()
