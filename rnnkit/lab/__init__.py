"""``rnnkit lab``: small, seeded experiments that show what recurrent networks do.

Each experiment is one module with a ``run(out, quick, seed, log) -> dict``
function. It writes ``<out>/<name>.json`` (numbers, settings, the command that
reproduces it) and PNG plots beside it; :mod:`rnnkit.lab.report` gathers every
JSON in a folder into one Markdown page.

    rnnkit lab basics --out lab/
    rnnkit lab memory --quick --out lab/
    rnnkit lab report lab/

``quick`` mode shrinks sizes so an experiment finishes in seconds (the tests use
it); the full mode is what ``docs/lab.md`` shows.
"""

from __future__ import annotations

import importlib
import inspect
import os
import platform
import time
from pathlib import Path
from typing import Callable

from ..errors import RnnkitError

EXPERIMENTS = {
    "basics": "Tensor shapes in nn.RNN, and the last output equals h_n",
    "gradients": "How much gradient reaches earlier time steps (vanishing gradients)",
    "memory": "Accuracy against the distance to remember (long-term dependency)",
    "dropout": "Where dropout acts, and that inter-layer dropout needs two layers",
    "explain": "The same review explained by a unidirectional and a bidirectional LSTM: where each looks",
}


def run_experiment(name: str, out: str | Path, quick: bool = False, seed: int = 0,
                   log: Callable[[str], None] = print, threads: int = 1, data_dir: str | None = None) -> dict:
    """Run one experiment and write ``<out>/<name>.json`` plus its plots; return the result.

    ``threads``: torch CPU threads. The lab's models are tiny, so one thread is
    fastest; more only adds synchronisation cost. ``data_dir``: where the experiments
    that train on a named dataset (``explain``: NSMC) find it.
    """
    if name not in EXPERIMENTS:
        raise RnnkitError(f"unknown lab experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RnnkitError(f"--out {out} is a file; give a folder for the lab results")
    out.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(f"{__name__}.{name}")
    import torch  # here, not at the top: `rnnkit --help` imports this package and should not wait for torch

    from ..run import atomic_write_json

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    try:
        extra = {"data_dir": data_dir} if "data_dir" in inspect.signature(module.run).parameters else {}
        result = module.run(out, quick=quick, seed=seed, log=log, **extra)
    finally:
        torch.set_num_threads(previous)
    result.update(
        experiment=name,
        title=EXPERIMENTS[name],
        mode="quick" if quick else "full",
        seed=seed,
        command=f"rnnkit lab {name} --out {out}{' --quick' if quick else ''}" + (f" --seed {seed}" if seed else "")
        + (f" --data-dir {data_dir}" if extra.get("data_dir") else ""),
        seconds=round(time.perf_counter() - started, 1),
        machine={"python": platform.python_version(), "torch": torch.__version__, "threads": threads,
                 "processor": platform.processor() or platform.machine()},
        date=time.strftime("%Y-%m-%d"),
    )
    atomic_write_json(out / f"{name}.json", result)
    log(f"{name}: wrote {out / (name + '.json')} and {len(result.get('figures', []))} plot(s) "
        f"in {result['seconds']:.1f}s")
    return result


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no screen needed)."""
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - matplotlib is a core dependency
        raise RnnkitError("the lab draws plots with matplotlib; pip install matplotlib") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def finish_accuracy_axes(ax, ticks, chance: float, xlabel: str, title: str, base: float = 10) -> None:
    """The lab's accuracy plots: a log x axis labelled at ``ticks``, a chance line, 0-1 accuracy."""
    ax.axhline(chance, color="grey", linestyle="--", label="chance")
    ax.set_xscale("log", base=base)
    ax.set_xticks(ticks, [str(x) for x in ticks])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)


def save_figure(fig, path: Path) -> str:
    """Save ``fig`` atomically as PNG and close it; return the file name."""
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    os.replace(tmp, path)
    return path.name


def seeded(seed: int):
    """A CPU ``torch.Generator`` and the global seed set, so each experiment is reproducible."""
    import torch

    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
