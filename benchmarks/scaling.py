"""How NSMC training cost grows with data: one epoch at 50k, 100k, 150k and 430k reviews.

    python benchmarks/scaling.py --data-dir ../shared/data [--sizes 50000 100000 150000 429707]

The first N reviews of ratings_train.txt followed by ratings_extra.txt.gz (150,000 + 279,707 = 429,707)
train the NSMC default config for one epoch, each size in a fresh process with a fresh token
cache, so peak memory (ru_maxrss) and cache size are that size's own. Validation: the first
5,000 reviews of ratings_test.txt. Reports tokenizing seconds, epoch seconds, both per 1,000
reviews, peak RSS and the token cache's size on disk.
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save  # noqa: E402


def child(n: int, data_dir: str) -> dict:
    import rnnkit
    from rnnkit.config import resolve_config
    from rnnkit.data import Examples, Splits, read_table

    root = Path(data_dir) / "nsmc"
    train = read_table(root / "ratings_train.txt", "document", "label")
    texts, labels = list(train.texts), list(train.labels)
    if n > len(texts):
        extra = read_table(root / "ratings_extra.txt.gz", "document", "label")
        texts += extra.texts
        labels += extra.labels
    if n > len(texts):
        raise SystemExit(f"only {len(texts)} reviews available, asked for {n}")
    test = read_table(root / "ratings_test.txt", "document", "label")
    splits = Splits(Examples(texts[:n], labels[:n]), Examples(test.texts[:5000], test.labels[:5000]),
                    Examples(test.texts[5000:5010], test.labels[5000:5010]), name="nsmc")
    log_lines = []
    started = time.perf_counter()
    # The one-layer recipe (`--config nsmc-fast`) the earlier results of this script were measured with.
    cfg = resolve_config("nsmc-fast", dict(data_dir=data_dir, epochs=1, progress=False,
                                          out=tempfile.mkdtemp(prefix="scaling-") + "/run"))
    rnnkit.train(cfg, splits=splits, log=log_lines.append)
    total = time.perf_counter() - started
    # Tokenizing the training reviews only (the 5,000 validation reviews are the same at every size).
    tokenize = sum(float(m.group(1)) for line in log_lines
                   for m in [re.search(r"^tokens: \S+ train: .* tokens in ([0-9.]+) s", line)] if m)
    epoch = next(float(re.search(r"([0-9.]+)s(  \*)?$", line).group(1)) for line in log_lines if line.startswith("epoch"))
    cache = Path(os.environ["RNNKIT_CACHE"])
    cache_bytes = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    return {"reviews": n, "tokenize_seconds": round(tokenize, 1), "epoch_seconds": round(epoch, 1),
            "total_seconds": round(total, 1), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "token_cache_mb": round(cache_bytes / 1e6, 1),
            "epoch_seconds_per_1k": round(1000 * epoch / n, 3), "tokenize_seconds_per_1k": round(1000 * tokenize / n, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50000, 100000, 150000, 429707])
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.data_dir)))
        return
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="scaling-cache-") as cache:
            env = dict(os.environ, RNNKIT_CACHE=cache)
            out = subprocess.run([sys.executable, __file__, "--data-dir", args.data_dir, "--child", str(n)],
                                 capture_output=True, text=True, env=env)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-3000:])
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
            save("scaling-nsmc", {"command": "benchmarks/scaling.py " + " ".join(sys.argv[1:]), "rows": rows})
    save("scaling-nsmc", {"command": "benchmarks/scaling.py " + " ".join(sys.argv[1:]), "rows": rows})


if __name__ == "__main__":
    main()
