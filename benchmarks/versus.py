"""The same `rnnkit train` command on this checkout and on an older commit, back to back.

    python benchmarks/versus.py --ref 408a7d5 --tag nsmc-gru-epoch -- \
        --dataset nsmc --data-dir ../shared/data --epochs 1 --cell gru

Everything after ``--`` is passed to `rnnkit train` unchanged (``--out`` and ``--no-progress`` are
added). The older commit is checked out with `git worktree` into a temporary folder and imported
through PYTHONPATH with this checkout's virtual environment, so both sides use the same torch and
packages; only rnnkit's code differs. Runs alternate (ref, this, ref, this, ...) so a drift in the
machine's speed hits both sides alike. For each run it records the wall clock of the whole command,
each epoch's seconds and validation accuracy (history.jsonl), and the final metrics; the result
file holds the ratios ref/this of the wall clock and of the first epoch's seconds.

``--this-args`` adds arguments on this checkout's side only: ``--this-args=--no-baseline`` times the epoch
alone, as 408a7d5 (which fits no baseline) does, since this checkout fits its baseline beside the
first epochs. Results go to benchmarks/results/versus-<tag>.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def worktree(ref: str, folder: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), ref], check=True,
                   capture_output=True)
    return folder


def one_run(src: Path, args: list, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    # -P: no current folder on sys.path, so PYTHONPATH alone decides which rnnkit is imported.
    imported = subprocess.run([sys.executable, "-P", "-c", "import rnnkit; print(rnnkit.__file__)"], env=env,
                              capture_output=True, text=True).stdout.strip()
    assert imported.startswith(str(src)), f"expected rnnkit from {src}, got {imported}"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-P", "-m", "rnnkit", "train", *args, "--out", str(out), "--no-progress"],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"rnnkit train failed with {src}:\n{proc.stderr[-2000:]}")
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "wall_seconds": round(wall, 2),
        "epoch_seconds": [round(h["seconds"], 2) for h in history],
        "val_accuracy": [round(h["val_accuracy"], 4) for h in history],
        "test_accuracy": metrics.get("test", {}).get("accuracy"),
        "test_macro_f1": metrics.get("test", {}).get("macro_f1"),
        "log_tail": proc.stderr.strip().splitlines()[-3:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="408a7d5", help="the older commit to compare with")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--this-args", default="",
                        help="extra `rnnkit train` arguments for this checkout only, e.g. '--no-baseline' (408a7d5 "
                             "has no baseline, and this checkout fits it beside the first epoch)")
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    train_args = [a for a in args.train_args if a != "--"]

    with tempfile.TemporaryDirectory(prefix="rnnkit-versus-") as tmp:
        tmp = Path(tmp)
        sides = {"ref": worktree(args.ref, tmp / "ref"), "this": ROOT}
        runs: dict = {"ref": [], "this": []}
        try:
            for i in range(args.repeats):
                for side, src in sides.items():
                    extra = args.this_args.split() if side == "this" else []
                    result = one_run(src, train_args + extra, tmp / f"{side}-{i}")
                    print(side, json.dumps(result), flush=True)
                    runs[side].append(result)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(sides["ref"])],
                           capture_output=True)

    def best(side, key):
        return min(r[key] if not isinstance(r[key], list) else r[key][0] for r in runs[side])

    summary = {
        "wall_ratio_ref_over_this": round(best("ref", "wall_seconds") / best("this", "wall_seconds"), 2),
        "first_epoch_ratio_ref_over_this": round(best("ref", "epoch_seconds") / best("this", "epoch_seconds"), 2),
    }
    print(summary)
    save(f"versus-{args.tag}", {"command": "benchmarks/versus.py " + " ".join(sys.argv[1:]), "ref": args.ref,
                                "runs": runs, "summary": summary})


if __name__ == "__main__":
    main()
