"""Issue 16's check: are the explanations faithful, and fast enough to use?

    python benchmarks/explain.py --run runs/nsmc --data-dir ../shared/data      # a trained NSMC run
    python benchmarks/explain.py --data-dir ../shared/data                       # trains one first (~5 min)

Faithfulness by deletion: for each of ``--n`` NSMC test reviews (seeded sample, at least
``k + 1`` tokens for the largest k), take the predicted class and its probability ``p``.
Delete the ``k`` tokens with the highest attribution (Integrated Gradients, or occlusion),
re-run the model on what is left, and record how much ``p`` fell; do the same for ``k``
tokens drawn at random (seeded). An attribution that finds what the model relies on loses
more than random. Deleting means the tokens are gone from the sequence, as occlusion does.

Speed: wall time of ``Run.explain`` per review, one review per call (what ``rnnkit explain``
and ``/explain`` do), default IG settings, over the first ``--time-reviews`` reviews of the
sample, in a pass of its own before the deletion runs. The fp32 GEMM speed measured just before
and after that pass says how fast the (shared) machine ran meanwhile.
"""

import argparse
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import gemm_peak, save  # noqa: E402

KS = (1, 2, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a trained NSMC run folder (default: train one into runs/bench-explain-nsmc)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-reviews", type=int, default=300)
    ap.add_argument("--plot", default="docs/explain_faithfulness.png")
    args = ap.parse_args()

    import torch

    import rnnkit
    from rnnkit.data import load_config_splits

    run_dir = args.run
    if run_dir is None:
        run_dir = "runs/bench-explain-nsmc"
        if not (Path(run_dir) / "run.json").exists():
            # The morphemes-only model (the default until the thirty-first session), as the recorded results used.
            cmd = [sys.executable, "-m", "rnnkit", "train", "--config", "nsmc-words", "--out", run_dir]
            if args.data_dir:
                cmd += ["--data-dir", args.data_dir]
            subprocess.run(cmd, check=True)
    run = rnnkit.load(run_dir)
    cfg = run.config if args.data_dir is None else run.config.update({"data_dir": args.data_dir})
    test = load_config_splits(cfg, progress=False)["test"]
    vec, model = run.vectorizer, run.model
    rng = random.Random(args.seed)
    order = list(range(len(test.texts)))
    rng.shuffle(order)
    limit = vec.max_len or 10 ** 9
    chosen, skipped = [], 0
    for i in order:
        toks = vec.tokenizer(test.texts[i])[:limit]
        if len(toks) > max(KS):
            chosen.append((test.texts[i], toks))
        else:
            skipped += 1
        if len(chosen) == args.n:
            break

    @torch.no_grad()
    def probability(token_lists, target):
        ids, lengths, _ = vec.encode_tokens(token_lists)
        return model.probabilities(model(ids.long(), lengths))[:, target]

    seconds = {"ig": [], "occlusion": []}
    # How fast this shared box multiplies around the timing pass: it drifts 2x between hours.
    gemm = [gemm_peak(torch.float32, "cpu")]
    run.explain(chosen[0][0])  # warm-up: first-call allocations and kernel choices
    for text, _ in chosen[: args.time_reviews]:
        for method in seconds:
            start = time.perf_counter()
            run.explain(text, method=method)
            seconds[method].append(time.perf_counter() - start)
    gemm.append(gemm_peak(torch.float32, "cpu"))

    drops = {name: {k: [] for k in KS} for name in ("ig", "occlusion", "random")}
    steps_used = []
    for n, (text, toks) in enumerate(chosen):
        attributions = {}
        for method in ("ig", "occlusion"):
            e = run.explain(text, method=method)[0]
            attributions[method] = [s for _, s in e.tokens]
            if method == "ig":
                steps_used.append(e.steps)
        target = run.labels.index(e.target)
        variants, keys = [toks], [None]
        for k in KS:
            for method, scores in attributions.items():
                top = set(sorted(range(len(toks)), key=lambda j: -scores[j])[:k])
                variants.append([t for j, t in enumerate(toks) if j not in top])
                keys.append((method, k))
            gone = set(rng.sample(range(len(toks)), k))
            variants.append([t for j, t in enumerate(toks) if j not in gone])
            keys.append(("random", k))
        p = probability(variants, target)
        for key, value in zip(keys[1:], p[1:].tolist()):
            drops[key[0]][key[1]].append(float(p[0]) - value)
        if (n + 1) % 100 == 0:
            print(f"{n + 1}/{len(chosen)} reviews", file=sys.stderr)

    def ms(values):
        values = sorted(values)
        return {"mean": 1000 * statistics.fmean(values), "median": 1000 * values[len(values) // 2],
                "p95": 1000 * values[int(0.95 * (len(values) - 1))], "max": 1000 * values[-1]}

    curves = {name: {str(k): statistics.fmean(v) for k, v in per_k.items()} for name, per_k in drops.items()}
    result = {
        "command": "python " + " ".join(sys.argv),
        "run": str(run_dir), "run_config": {k: getattr(run.config, k) for k in (
            "cell", "bidirectional", "hidden_size", "embedding_dim", "pooling", "tokenizer")},
        "test_accuracy": (run.metrics.get("test") or {}).get("accuracy"),
        "reviews": len(chosen), "skipped_short": skipped,
        "mean_probability_drop": curves,
        "ig_wins_over_random": {str(k): sum(a > b for a, b in zip(drops["ig"][k], drops["random"][k])) / len(chosen)
                                for k in KS},
        "seconds_per_review_ms": {m: ms(v) for m, v in seconds.items()}, "timed_reviews": len(seconds["ig"]),
        "fp32_gemm_gflops_before_after_timing": [round(g, 1) for g in gemm],
        "ig_steps": {str(s): steps_used.count(s) for s in sorted(set(steps_used))},
        "torch_threads": torch.get_num_threads(),
    }
    save("explain-nsmc", result)
    if args.plot:
        from rnnkit.metrics import _atomic_savefig, _close, _new_figure

        fig = _new_figure((5.5, 4))
        ax = fig.add_subplot(1, 1, 1)
        for name, style in (("ig", "o-"), ("occlusion", "s-"), ("random", "x--")):
            ax.plot(KS, [curves[name][str(k)] for k in KS], style, label=name)
        ax.set_xticks(KS)
        ax.set_xlabel("tokens deleted (k)")
        ax.set_ylabel("mean drop of the predicted class's probability")
        ax.set_title(f"Deletion on {len(chosen)} NSMC test reviews")
        ax.legend()
        fig.tight_layout()
        _atomic_savefig(fig, args.plot)
        _close(fig)


if __name__ == "__main__":
    main()
