"""Shared fixtures: small synthetic datasets that train in seconds, and the shared data folder."""

import atexit
import csv
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest

from rnnkit import Config

# Tiny test models run fastest on one thread, and a second OpenMP team on a busy 2-core machine can
# stall for minutes; set before torch is imported here or in any subprocess a test starts.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Token caches and downloads from tests go to a throw-away folder, never the user's cache.
os.environ["RNNKIT_CACHE"] = _TEST_CACHE = tempfile.mkdtemp(prefix="rnnkit-test-cache-")
# Each pytest process (every xdist worker imports this file) removes its own folder when it ends.
atexit.register(shutil.rmtree, _TEST_CACHE, ignore_errors=True)

SHARED_DATA = Path(os.environ.get("RNNKIT_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")

# Each class draws its letters mostly from its own alphabet: learnable in a couple of epochs.
ALPHABETS = {"alpha": "abcdefg", "beta": "hijklmn", "gamma": "opqrstu"}


def make_rows(n_per_class=120, seed=0):
    rng = random.Random(seed)
    rows = []
    for label, letters in ALPHABETS.items():
        for _ in range(n_per_class):
            n = rng.randint(3, 12)
            text = "".join(rng.choice(letters) if rng.random() < 0.8 else rng.choice("vwxyz") for _ in range(n))
            rows.append((text, label))
    rng.shuffle(rows)
    return rows


def write_toy_csv(path: Path, n_per_class: int = 120) -> Path:
    """The toy alphabet data as a text,label CSV at ``path``."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(make_rows(n_per_class))
    return path


@pytest.fixture
def toy_csv(tmp_path):
    return write_toy_csv(tmp_path / "toy.csv")


def tiny_config(dataset, out, **kw) -> Config:
    base = dict(dataset=str(dataset), out=str(out), embedding_dim=16, hidden_size=16, head_hidden=16,
                epochs=3, batch_size=32, progress=False, early_stopping=None, lr=1e-2,
                # Many tests pin what a small run learns; adversarial training has tests of its own.
                adversarial=0.0)
    base.update(kw)
    return Config(**base)


@pytest.fixture
def shared_data():
    if not (SHARED_DATA / "surnames" / "surnames_with_splits.csv").exists():
        pytest.skip(f"shared datasets not found at {SHARED_DATA}; set RNNKIT_DATA_DIR")
    return SHARED_DATA


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
    """A small trained run on the toy alphabet data (labels alpha/beta/gamma), shared by many tests."""
    import rnnkit

    tmp = tmp_path_factory.mktemp("toy-run")
    rnnkit.train(tiny_config(write_toy_csv(tmp / "toy.csv"), tmp / "run", epochs=4))
    return tmp / "run"


@pytest.fixture(autouse=True)
def _no_installed_encoders(monkeypatch):
    """tokenizer=auto must not turn on whether this machine has rnnkit[pretrained] installed; tests of
    pretrained embeddings name their encoder."""
    import rnnkit.pretrained

    monkeypatch.setattr(rnnkit.pretrained, "installed_encoders", lambda: {})
