"""rnnkit: recurrent text classifiers in PyTorch, from the command line, Python or HTTP.

    import rnnkit
    run = rnnkit.train(rnnkit.Config(dataset="surnames", data_dir="data"))
    run.predict(["Nakamura", "Schmidt"], top_k=3)
    run = rnnkit.load("runs/surnames-lstm-...")

``import rnnkit`` stays light: torch is imported on first use of train/load.
"""

from .config import Config
from .errors import RnnkitError

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
