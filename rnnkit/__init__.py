"""rnnkit: recurrent text classifiers in PyTorch, from the command line, Python or HTTP.

    import rnnkit
    run = rnnkit.train(dataset="surnames", data_dir="data")    # the tuned surnames defaults
    run.predict(["Nakamura", "Schmidt"], top_k=3)
    run = rnnkit.load("runs/surnames-lstm-...")

``import rnnkit`` stays light: torch is imported on first use of train/load.
"""

import os
import sys

# libgomp's idle OpenMP threads spin 300,000 times before they sleep. rnnkit runs the two directions of
# an LSTM layer on two threads at once (rnnkit.padded.TwoDirections), and a spinning thread left from
# the 2-thread ops before them holds a core: NSMC epochs took 80.4-80.9 s with the default against
# 65.2-69.0 s at 10,000 spins with both directions at once. libgomp reads this once, as torch loads it.
if "torch" not in sys.modules:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from .config import Config  # noqa: E402
from .errors import RnnkitError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Config", "RnnkitError", "train", "load", "load_dataset", "Run", "__version__"]


def __getattr__(name):
    if name == "train":
        from .trainer import train

        return train
    if name in ("load", "Run"):
        from . import predict

        return getattr(predict, name)
    if name == "load_dataset":
        from .data import load_dataset

        return load_dataset
    raise AttributeError(f"module 'rnnkit' has no attribute {name!r}")
