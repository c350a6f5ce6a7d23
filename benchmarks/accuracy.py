"""Accuracy benchmark: train rnnkit's default config on a named dataset and time it.

    python benchmarks/accuracy.py surnames --data-dir ../shared/data
    python benchmarks/accuracy.py names --data-dir ../shared/data --seeds 0 1 2

Targets (issue 13): one default run beats the linear n-gram baseline that `rnnkit train` fits
beside it: surnames >= 0.80 test accuracy, names >= 0.85, NSMC >= 0.885 in <= 15 min on a 2-core
CPU, macro-F1 never below the baseline's. Reports test accuracy, macro-F1 and wall time per seed,
with the baseline's numbers and time from the same run (its time is inside the run's).
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", nargs="*", default=[], help="config overrides KEY=VALUE")
    parser.add_argument("--tag", default="", help="suffix for the result file name")
    parser.add_argument("--config", default=None, help="a config file or named config (e.g. notes-nsmc)")
    parser.add_argument("--keep", default=None, help="copy the (last) run folder here, e.g. for the load test")
    args = parser.parse_args()

    import rnnkit
    from rnnkit.config import resolve_config

    overrides = dict(kv.split("=", 1) for kv in args.set)
    rows = []
    for seed in args.seeds:
        out = Path(tempfile.mkdtemp(prefix="rnnkit-bench-")) / "run"
        cfg = resolve_config(args.config, {"dataset": args.dataset, "data_dir": args.data_dir, "seed": seed,
                                           "out": str(out), "progress": False, **overrides})
        started = time.perf_counter()
        epoch_ends = []

        def log(message: str) -> None:
            if message.startswith("epoch "):
                epoch_ends.append(time.perf_counter())
            print(message, file=sys.stderr, flush=True)

        run = rnnkit.train(cfg, log=log)
        seconds = time.perf_counter() - started
        history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
        rows.append({"seed": seed, "test_accuracy": run.metrics["test"]["accuracy"],
                     "test_macro_f1": run.metrics["test"]["macro_f1"], "val_accuracy": run.metrics["val"]["accuracy"],
                     "epochs": run.metrics["epochs_run"], "best_epoch": run.metrics["best_epoch"],
                     "seconds": round(seconds, 1),
                     "baseline": {k: v for k, v in (run.metrics.get("baseline") or {}).items() if k != "tried"},
                     # `--set hybrid=true`: the mix, reported apart from the RNN's own numbers above
                     **({"hybrid": run.metrics["hybrid"]} if "hybrid" in run.metrics else {}),
                     # Wall time from the start of `train` to the end of each epoch, for accuracy-vs-time plots.
                     "curve": [{"epoch": h["epoch"], "val_accuracy": h["val_accuracy"],
                                "wall_seconds": round(epoch_ends[i] - started, 1)} for i, h in enumerate(history)]})
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(out, args.keep)
        shutil.rmtree(out.parent, ignore_errors=True)
    accs = [r["test_accuracy"] for r in rows]
    summary = {"mean_test_accuracy": statistics.mean(accs),
               "mean_test_macro_f1": statistics.mean(r["test_macro_f1"] for r in rows),
               "min_test_accuracy": min(accs), "max_seconds": max(r["seconds"] for r in rows)}
    if all(r["baseline"] for r in rows):
        summary["mean_baseline_test_accuracy"] = statistics.mean(r["baseline"]["test"]["accuracy"] for r in rows)
        summary["mean_baseline_test_macro_f1"] = statistics.mean(r["baseline"]["test"]["macro_f1"] for r in rows)
    if all("hybrid" in r for r in rows):
        summary["mean_hybrid_test_accuracy"] = statistics.mean(r["hybrid"]["test"]["accuracy"] for r in rows)
    save(f"accuracy-{args.dataset}{'-' + args.tag if args.tag else ''}", {"command": " ".join(sys.argv), "overrides": overrides,
                                      "runs": rows, **summary})


if __name__ == "__main__":
    main()
