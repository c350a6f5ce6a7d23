"""Try variants of the NSMC default config on pre-tokenized data, ranked by validation accuracy.

    python benchmarks/nsmc_tuning.py --data-dir ../shared/data --work .bench_data/nsmc_kiwi \
        --variants '{"epochs": 6}' '{"embedding_dim": 256, "hidden_size": 160}'

Step 1 (once): tokenize ratings_train/test.txt with the default NSMC tokenizer (kiwi morphemes +
POS, through rnnkit's token cache) and write them with tokens joined by spaces into --work.
Step 2: train each variant on that folder with the whitespace tokenizer, which gives back the
same tokens, so a variant costs training time only. The same rows and the same seeded validation
split as `rnnkit train --dataset nsmc`. Results are appended to benchmarks/results/nsmc-tuning.json;
test accuracy is reported, never used to choose.

`--syllables` writes a second view of each review after its morphemes: a separator token, then the
review's syllables (rnnkit's `syllable` tokenizer), so one sequence carries both (use a fresh --work
folder and `--variants '{"max_len": 300}'`).
"""

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402

RESULTS = Path("benchmarks/results/nsmc-tuning.json")


SEPARATOR = "§§"


def pretokenize(src: Path, dst: Path, syllables: bool = False) -> None:
    from rnnkit.config import resolve_config
    from rnnkit.tokencache import tokenize_corpus
    from rnnkit.tokenizers import build_tokenizer
    from rnnkit.trainer import tokenizer_settings

    dst.mkdir(parents=True, exist_ok=True)
    # The morphemes alone (the NSMC default before its character branch): the syllables, if any, come from --syllables.
    tokenizer = build_tokenizer(tokenizer_settings(resolve_config("nsmc-words")))
    syllable = build_tokenizer({"name": "syllable", "squeeze_repeats": 3})
    for name in ("ratings_train.txt", "ratings_test.txt"):
        with open(src / name, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        tokens = tokenize_corpus(tokenizer, [r[1] for r in rows], cache=True, progress=False)
        tmp = dst / (name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("id\tdocument\tlabel\n")
            for row, toks in zip(rows, tokens):
                if syllables:
                    toks = [*toks, SEPARATOR, *syllable(row[1])]
                f.write(f"{row[0]}\t{' '.join(toks)}\t{row[2]}\n")
        tmp.replace(dst / name)


def run_variant(work: Path, overrides: dict) -> dict:
    import rnnkit
    from rnnkit.config import resolve_config

    base = dict(dataset=str(work), tokenizer="whitespace", normalize=None, squeeze_repeats=None, pos_tags=False,
                progress=False, cache_tokens=False, label_names={"0": "negative", "1": "positive"})
    cfg = resolve_config("nsmc-words").update(base).update(overrides)  # the results here were measured from it
    cfg = cfg.update({"out": tempfile.mkdtemp(prefix="nsmc-tuning-") + "/run"})
    started = time.perf_counter()
    curve = []

    def log(message: str) -> None:
        if message.startswith("epoch"):
            parts = message.split()
            curve.append({"epoch": int(parts[1]), "val_accuracy": float(parts[parts.index("val") + 4]),
                          "wall_seconds": round(time.perf_counter() - started, 1)})
            print(f"  {message}", flush=True)

    run = rnnkit.train(cfg, log=log)
    return {"overrides": overrides, "val_accuracy": run.metrics["val"]["accuracy"],
            "test_accuracy": run.metrics["test"]["accuracy"], "best_epoch": run.metrics["best_epoch"],
            "seconds": round(time.perf_counter() - started, 1), "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--work", required=True, help="folder for the pre-tokenized files (not in git)")
    parser.add_argument("--variants", nargs="+", required=True, help="JSON objects of config overrides")
    parser.add_argument("--syllables", action="store_true", help="append each review's syllables after its morphemes")
    args = parser.parse_args()
    work = Path(args.work)
    if not (work / "ratings_test.txt").exists():
        pretokenize(Path(args.data_dir) / "nsmc", work, args.syllables)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"benchmark": "nsmc-tuning", "runs": []}
    for spec in args.variants:
        overrides = json.loads(spec)
        print(f"variant {overrides}", flush=True)
        row = run_variant(work, overrides)
        row["machine"] = machine()
        row.setdefault("command", "benchmarks/nsmc_tuning.py " + " ".join(sys.argv[1:]))
        print(json.dumps({k: row[k] for k in ("overrides", "val_accuracy", "test_accuracy", "seconds")}), flush=True)
        results["runs"].append(row)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
