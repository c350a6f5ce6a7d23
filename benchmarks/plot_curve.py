"""Plot validation accuracy against wall time from a benchmarks/accuracy.py result file.

    python benchmarks/plot_curve.py benchmarks/results/accuracy-nsmc.json docs/nsmc_val_vs_time.png
"""

import json
import sys


def main() -> None:
    src, dest = sys.argv[1], sys.argv[2]
    result = json.load(open(src))
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for run in result["runs"]:
        xs = [0] + [p["wall_seconds"] / 60 for p in run["curve"]]
        ys = [None] + [p["val_accuracy"] for p in run["curve"]]
        ax.plot(xs[1:], ys[1:], marker="o", label=f"seed {run['seed']} (test {run['test_accuracy']:.4f})")
        for p in run["curve"]:
            ax.annotate(f"ep {p['epoch']}", (p["wall_seconds"] / 60, p["val_accuracy"]), fontsize=7,
                        textcoords="offset points", xytext=(4, -10))
        base = (run.get("baseline") or {}).get("val")
        if base:
            ax.axhline(base["accuracy"], linestyle="--", color="gray",
                       label=f"linear baseline, val (test {run['baseline']['test']['accuracy']:.4f}; "
                             f"{run['baseline']['seconds']:.0f} s)")
    ax.set_xlabel("wall time since start of train, incl. tokenization and baseline (min)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{result['benchmark']} on {result['machine']['cpu']}, {result['machine']['cores']} cores")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(dest, dpi=120)
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
