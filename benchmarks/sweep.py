"""Run several configs x seeds in parallel processes and rank them by validation accuracy.

    python benchmarks/sweep.py --dataset surnames --data-dir ../shared/data --jobs 4 --threads 2 \
        --seeds 0 1 --grid '{"cell": "gru"}' '{"head_dropout": 0.5}'

Each grid entry is a JSON object of config overrides applied to the defaults. Ranking uses the
validation split only; test accuracy is reported beside it, never used to choose.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def one(job):
    import torch

    import rnnkit
    from common import run_scores

    overrides, seed, dataset, data_dir, threads = job
    torch.set_num_threads(threads)
    out = Path(tempfile.mkdtemp(prefix="sweep-")) / "run"
    cfg = rnnkit.Config.for_dataset(dataset, data_dir=data_dir, seed=seed, out=str(out), progress=False)
    cfg = cfg.update(overrides)
    started = time.perf_counter()
    run = rnnkit.train(cfg, log=lambda m: None)
    result = {"overrides": overrides, "seed": seed, **run_scores(run),
              "seconds": round(time.perf_counter() - started, 1)}
    baseline = run.metrics.get("baseline")
    if baseline:  # the same split's linear model, for a user file whose split the seed draws
        result["baseline"] = {"val": baseline["val"]["accuracy"], "val_f1": baseline["val"]["macro_f1"],
                              "test": baseline["test"]["accuracy"], "test_f1": baseline["test"]["macro_f1"]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--grid", nargs="+", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    grid = [json.loads(g) for g in args.grid]
    jobs = [(g, s, args.dataset, args.data_dir, args.threads) for g in grid for s in args.seeds]
    results = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for r in pool.map(one, jobs):
            print(json.dumps(r), flush=True)
            results.append(r)
    print("\nmean over seeds, best validation first:")
    summary = []
    for g in grid:
        rs = [r for r in results if r["overrides"] == g]
        summary.append({"overrides": g, "val": statistics.mean(r["val"] for r in rs),
                        "val_f1": statistics.mean(r["val_f1"] for r in rs),
                        "test": statistics.mean(r["test"] for r in rs),
                        "test_f1": statistics.mean(r["test_f1"] for r in rs),
                        "seconds": statistics.mean(r["seconds"] for r in rs)})
    for s in sorted(summary, key=lambda s: -s["val"]):
        print(f"val {s['val']:.4f} (f1 {s['val_f1']:.4f})  test {s['test']:.4f}  f1 {s['test_f1']:.4f}  "
              f"{s['seconds']:6.1f}s  "
              f"{json.dumps(s['overrides'])}")
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": results, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
