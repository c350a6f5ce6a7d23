"""Reading labelled text: files, folders and the named datasets.

Everything ends up as :class:`Splits` -- plain lists of texts and labels for
train / val / test -- so the rest of rnnkit never sees a file format.

Readers:
  * CSV / TSV / JSONL with configurable text and label columns, optionally a
    ``split`` column (``surnames_with_splits.csv``);
  * a folder with ``train.*``, ``val.*`` (optional) and ``test.*`` files;
  * a folder with one ``<Label>.txt`` per class, one example per line (the
    PyTorch names tutorial), split by seed.

Named datasets are looked up in ``--data-dir``, then ``$RNNKIT_DATA_DIR``, then
the user cache folder; a missing one is downloaded into the cache when online.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .errors import RnnkitError

TEXT_COLUMNS = ("text", "document", "sentence", "review", "surname", "name", "word", "content")
LABEL_COLUMNS = ("label", "labels", "class", "category", "nationality", "language", "target", "y")
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}


@dataclass
class Examples:
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Splits:
    train: Examples
    val: Examples
    test: Examples
    name: str = ""
    source: str = ""
    notes: list[str] = field(default_factory=list)
    """Human-readable remarks on what loading did (rows skipped, duplicates dropped)."""

    def __getitem__(self, split: str) -> Examples:
        if split not in ("train", "val", "test"):
            raise RnnkitError(f"split must be train, val or test; got {split!r}")
        return getattr(self, split)

    def sizes(self) -> dict:
        return {s: len(self[s]) for s in ("train", "val", "test")}


@dataclass
class Table:
    """Rows read from one file: texts, labels and (when present) split names."""

    texts: list[str]
    labels: list[str]
    splits: Optional[list[str]] = None
    skipped_empty: int = 0
    path: str = ""


# ---------------------------------------------------------------------------
# Files


def read_text_file(path: Path) -> str:
    """Read a UTF-8 file, turning the usual failures into one-line errors."""
    path = Path(path)
    if not path.exists():
        raise RnnkitError(f"file not found: {path}")
    if path.is_dir():
        raise RnnkitError(f"{path} is a folder; expected a file")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        import gzip

        raw = gzip.decompress(raw)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RnnkitError(
            f"{path} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "re-save it as UTF-8"
        ) from None
    if not text.strip():
        raise RnnkitError(f"{path} is empty; it needs a header and at least one example")
    return text


def _format_of(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".tsv", ".txt", ".tab")):
        return "tsv"
    raise RnnkitError(f"cannot tell the format of {path}: use a .csv, .tsv, .txt (tab-separated) or .jsonl file")


def _pick_column(columns: Sequence[str], wanted: Optional[str], guesses: Sequence[str], what: str, path) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise RnnkitError(
                f"{path} has no column {wanted!r} (columns: {', '.join(columns)}); "
                f"pass the right one with --{what}-column"
            )
        return wanted
    lowered = {c.lower(): c for c in columns}
    for guess in guesses:
        if guess in lowered:
            return lowered[guess]
    raise RnnkitError(
        f"cannot tell which column of {path} holds the {what} (columns: {', '.join(columns)}); "
        f"pass it with --{what}-column"
    )


def read_table(path, text_column: Optional[str] = None, label_column: Optional[str] = None,
               require_labels: bool = True) -> Table:
    """Read a CSV, TSV or JSONL file of labelled texts.

    Rows whose text is empty are skipped and counted (NSMC has a few); a row
    with an empty label is an error, since guessing one would poison training.
    With ``require_labels=False`` a missing label column is allowed (for
    prediction input) and labels come back empty.
    """
    path = Path(path)
    fmt = _format_of(path)
    content = read_text_file(path)
    if fmt == "jsonl":
        rows = []
        for lineno, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RnnkitError(f"{path}:{lineno} is not valid JSON ({exc.msg}); each line must be one object") from None
            if not isinstance(row, dict):
                raise RnnkitError(f"{path}:{lineno} must be a JSON object like {{\"text\": ..., \"label\": ...}}")
            rows.append(row)
        columns = list(dict.fromkeys(k for r in rows[:100] for k in r))
    else:
        # QUOTE_NONE for TSV: NSMC reviews contain stray quotes that csv would swallow.
        reader = csv.DictReader(
            io.StringIO(content, newline=""),
            delimiter="," if fmt == "csv" else "\t",
            quoting=csv.QUOTE_MINIMAL if fmt == "csv" else csv.QUOTE_NONE,
        )
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    if not rows:
        raise RnnkitError(f"{path} has a header but no rows")
    text_col = _pick_column(columns, text_column, TEXT_COLUMNS, "text", path)
    try:
        label_col = _pick_column(columns, label_column, LABEL_COLUMNS, "label", path)
    except RnnkitError:
        if require_labels or label_column is not None:
            raise
        label_col = None
    split_col = next((c for c in columns if c.lower() == "split"), None)

    texts, labels, splits, skipped = [], [], [] if split_col else None, 0
    for lineno, row in enumerate(rows, 2):
        text = row.get(text_col)
        text = "" if text is None else str(text).strip()
        if not text:
            skipped += 1
            continue
        if label_col is not None:
            label = row.get(label_col)
            label = "" if label is None else str(label).strip()
            if not label:
                raise RnnkitError(f"{path}: row {lineno} has an empty {label_col!r}; fill it in or drop the row")
            labels.append(label)
        texts.append(text)
        if split_col:
            raw = str(row.get(split_col) or "").strip().lower()
            if raw not in SPLIT_NAMES:
                raise RnnkitError(
                    f"{path}: row {lineno} has split {raw!r}; use train, val or test (or drop the split column)"
                )
            splits.append(SPLIT_NAMES[raw])
    if not texts:
        raise RnnkitError(f"{path}: every row has an empty {text_col!r}")
    return Table(texts, labels, splits, skipped, str(path))


def read_label_folder(folder) -> Table:
    """Read ``<Label>.txt`` files (one example per line) from ``folder``."""
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*.txt") if p.is_file())
    if not files:
        raise RnnkitError(f"{folder} has no <Label>.txt files; put one file per class, one example per line")
    texts, labels, skipped = [], [], 0
    for f in files:
        for line in read_text_file(f).splitlines():
            line = line.strip()
            if line:
                texts.append(line)
                labels.append(f.stem)
            else:
                skipped += 1
    return Table(texts, labels, None, skipped, str(folder))


# ---------------------------------------------------------------------------
# Splitting


def stratified_split(labels: Sequence[str], val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Assign each index to train/val/test so every class keeps its share.

    Per class the counts are rounded, so a class of 5 with 10% test gets one
    test example (round-half-even aside) and tiny classes stay in train.
    """
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    rng = random.Random(seed)
    out = ["train"] * len(labels)
    for label in sorted(by_label):
        idx = by_label[label]
        rng.shuffle(idx)
        n_test = round(len(idx) * test_fraction)
        n_val = round(len(idx) * val_fraction)
        if n_test + n_val >= len(idx):  # never leave a class without training data
            n_test = n_val = 0
        for i in idx[:n_test]:
            out[i] = "test"
        for i in idx[n_test:n_test + n_val]:
            out[i] = "val"
    return out


def dedupe(table: Table) -> int:
    """Drop repeated (text, label) pairs in place; return how many went."""
    seen, keep = set(), []
    for i, pair in enumerate(zip(table.texts, table.labels)):
        if pair not in seen:
            seen.add(pair)
            keep.append(i)
    dropped = len(table.texts) - len(keep)
    if dropped:
        table.texts = [table.texts[i] for i in keep]
        table.labels = [table.labels[i] for i in keep]
        if table.splits is not None:
            table.splits = [table.splits[i] for i in keep]
    return dropped


def splits_from_table(table: Table, val_fraction: float, test_fraction: float, seed: int,
                      drop_duplicates: bool = True, name: str = "") -> Splits:
    notes = []
    if table.skipped_empty:
        notes.append(f"skipped {table.skipped_empty} rows with empty text")
    if table.splits is None:
        if drop_duplicates:
            dropped = dedupe(table)
            if dropped:
                notes.append(f"dropped {dropped} repeated (text, label) pairs before splitting")
        assignment = stratified_split(table.labels, val_fraction, test_fraction, seed)
        notes.append(f"split by seed {seed}: stratified {1 - val_fraction - test_fraction:.0%}/"
                     f"{val_fraction:.0%}/{test_fraction:.0%}")
    else:
        assignment = table.splits
    parts = {s: Examples() for s in ("train", "val", "test")}
    for text, label, split in zip(table.texts, table.labels, assignment):
        parts[split].texts.append(text)
        parts[split].labels.append(label)
    if not parts["train"]:
        raise RnnkitError(f"{table.path} has no training rows; check its split column")
    return Splits(parts["train"], parts["val"], parts["test"], name=name, source=table.path, notes=notes)


def split_files(folder: Path) -> dict[str, Path]:
    """Find train/val/test files in a folder (``train.csv``, ``dev.tsv``, ``ratings_test.txt``...)."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        stem = p.name.lower().split(".")[0]
        for word, split in SPLIT_NAMES.items():
            if stem == word or stem.endswith("_" + word) or stem.endswith("-" + word):
                found.setdefault(split, p)
    return found


def load_path(path, text_column=None, label_column=None, val_fraction=0.1, test_fraction=0.1,
              seed=0, drop_duplicates=True) -> Splits:
    """Load any supported file or folder into :class:`Splits`."""
    path = Path(path)
    if not path.exists():
        raise RnnkitError(f"dataset path not found: {path}; give a file, a folder, or a named dataset ({', '.join(DATASETS)})")
    if path.is_file():
        table = read_table(path, text_column, label_column)
        return splits_from_table(table, val_fraction, test_fraction, seed, drop_duplicates, name=path.stem)
    files = split_files(path)
    if "train" in files and "test" in files:
        return load_split_files(files, text_column, label_column, val_fraction, seed, name=path.name)
    return splits_from_table(read_label_folder(path), val_fraction, test_fraction, seed, drop_duplicates, name=path.name)


def load_split_files(files: dict[str, Path], text_column=None, label_column=None, val_fraction=0.1,
                     seed=0, name="") -> Splits:
    """Separate train/(val)/test files; without a val file, val is carved from train by seed."""
    tables = {s: read_table(p, text_column, label_column) for s, p in files.items()}
    notes = [f"skipped {t.skipped_empty} rows with empty text in {Path(t.path).name}"
             for t in tables.values() if t.skipped_empty]
    train = Examples(tables["train"].texts, tables["train"].labels)
    if "val" in tables:
        val = Examples(tables["val"].texts, tables["val"].labels)
    else:
        assignment = stratified_split(train.labels, val_fraction, 0.0, seed)
        val = Examples([t for t, s in zip(train.texts, assignment) if s == "val"],
                       [y for y, s in zip(train.labels, assignment) if s == "val"])
        train = Examples([t for t, s in zip(train.texts, assignment) if s == "train"],
                         [y for y, s in zip(train.labels, assignment) if s == "train"])
        notes.append(f"val carved from train by seed {seed} ({val_fraction:.0%}, stratified)")
    test = Examples(tables["test"].texts, tables["test"].labels)
    return Splits(train, val, test, name=name, source=str(files["train"].parent), notes=notes)


# ---------------------------------------------------------------------------
# Named datasets


@dataclass(frozen=True)
class Remote:
    """Where a dataset file comes from: a URL and, where known, its sha256."""

    url: str
    sha256: Optional[str] = None
    member: Optional[str] = None
    """For zip archives: the folder inside the archive to extract."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    files: tuple[str, ...]
    """Paths, relative to a data root, that must exist."""
    remotes: tuple[Remote, ...] = ()
    label_names: Optional[dict] = None
    builtin: bool = False


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "words",
            "word -> language, 10 Latin-script languages, built from wordfreq's shipped lists (offline)",
            files=(),
            builtin=True,
        ),
        DatasetInfo(
            "surnames",
            "surname -> nationality, 18 classes, book split (NLP with PyTorch, ch. 6)",
            files=("surnames/surnames_with_splits.csv",),
            remotes=(Remote(
                "https://raw.githubusercontent.com/jasoriya/CS6120-PS2-support/master/data/surnames/surnames_with_splits.csv",
                "af048a68dcf7b2328894c1d11011f957d7d5a6462bc1bf79a6d8feaac2137529",
            ),),
        ),
        DatasetInfo(
            "names",
            "name -> language, 18 classes, PyTorch char-RNN tutorial; seeded stratified 80/10/10 split",
            files=("names",),
            # The tutorial publishes no checksum; the archive is extracted and its file list checked.
            remotes=(Remote("https://download.pytorch.org/tutorial/data.zip", None, member="data/names/"),),
        ),
        DatasetInfo(
            "nsmc",
            "Korean movie reviews -> negative/positive (NSMC), 150k train / 50k test",
            files=("nsmc/ratings_train.txt", "nsmc/ratings_test.txt"),
            remotes=(
                Remote("https://raw.githubusercontent.com/e9t/nsmc/master/ratings_train.txt"),
                Remote("https://raw.githubusercontent.com/e9t/nsmc/master/ratings_test.txt"),
            ),
            label_names={"0": "negative", "1": "positive"},
        ),
    )
}


def cache_dir() -> Path:
    """The per-user folder for downloaded datasets (``$RNNKIT_CACHE`` overrides)."""
    if os.environ.get("RNNKIT_CACHE"):
        return Path(os.environ["RNNKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or (
        os.environ.get("LOCALAPPDATA") if sys.platform == "win32" else None
    ) or Path.home() / ".cache"
    return Path(base) / "rnnkit"


def data_roots(data_dir: Optional[str] = None) -> list[Path]:
    """Where named datasets are looked for, in order."""
    roots = []
    if data_dir:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get("RNNKIT_DATA_DIR"):
        roots.append(Path(os.environ["RNNKIT_DATA_DIR"]).expanduser())
    roots.append(cache_dir())
    return roots


def find_dataset(name: str, data_dir: Optional[str] = None) -> Optional[Path]:
    """The first data root holding every file of dataset ``name``, or None."""
    info = DATASETS[name]
    for root in data_roots(data_dir):
        if all((root / f).exists() for f in info.files):
            return root
    return None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(remote: Remote, dest: Path, progress: bool = True, opener: Callable = urllib.request.urlopen) -> Path:
    """Fetch ``remote`` to ``dest`` atomically and verify its sha256 when one is known.

    For a zip with ``member`` set, ``dest`` is a folder that receives that member's files.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, opener(remote.url, timeout=30) as resp:
            total = int(resp.headers.get("Content-Length") or 0) if hasattr(resp, "headers") else 0
            from tqdm.auto import tqdm

            with tqdm(total=total or None, unit="B", unit_scale=True, desc=f"download {dest.name}",
                      disable=None if progress else True, leave=False) as bar:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        if remote.sha256:
            got = sha256_of(tmp)
            if got != remote.sha256:
                raise RnnkitError(
                    f"download of {remote.url} has sha256 {got}, expected {remote.sha256}; "
                    "the file changed upstream or was corrupted: delete it and retry, or place a good copy in --data-dir"
                )
        if remote.member:
            _extract_member(tmp, remote.member, dest)
        else:
            os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _extract_member(archive: Path, member: str, dest: Path) -> None:
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".extract-"))
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.startswith(member) and not n.endswith("/")]
            if not names:
                raise RnnkitError(f"archive has no {member!r} folder; the upstream layout changed")
            for n in names:
                target = staging / Path(n).name  # flat: never trust paths inside an archive
                target.write_bytes(zf.read(n))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_dataset(name: str, data_dir: Optional[str] = None, progress: bool = True) -> Path:
    """Return the data root holding ``name``, downloading it into the cache if needed."""
    root = find_dataset(name, data_dir)
    if root is not None:
        return root
    info = DATASETS[name]
    searched = ", ".join(str(r) for r in data_roots(data_dir))
    expected = " and ".join(info.files)
    if os.environ.get("RNNKIT_OFFLINE") == "1" or not info.remotes:
        raise RnnkitError(
            f"dataset {name!r} not found: expected {expected} under one of: {searched}; "
            "pass --data-dir (or set RNNKIT_DATA_DIR) to the folder holding it"
        )
    cache = cache_dir()
    try:
        for remote, rel in zip(info.remotes, info.files):
            target = cache / rel
            if not target.exists():
                print(f"downloading {name} from {remote.url}", file=sys.stderr)
                download(remote, target, progress=progress)
    except OSError as exc:
        raise RnnkitError(
            f"dataset {name!r} not found (expected {expected} under one of: {searched}) and the download "
            f"failed ({getattr(exc, 'reason', exc)}); pass --data-dir to a folder holding it"
        ) from None
    return cache


def load_dataset(spec: str, data_dir: Optional[str] = None, text_column=None, label_column=None,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                 drop_duplicates: bool = True, progress: bool = True) -> Splits:
    """Load a named dataset or a path into :class:`Splits`.

    >>> splits = load_dataset("words")
    >>> sorted(splits.sizes())
    ['test', 'train', 'val']
    """
    if spec not in DATASETS:
        if Path(spec).exists() or any(c in spec for c in "/\\."):
            return load_path(spec, text_column, label_column, val_fraction, test_fraction, seed, drop_duplicates)
        raise RnnkitError(f"unknown dataset {spec!r}: use one of {', '.join(DATASETS)} or a path to a file or folder")
    info = DATASETS[spec]
    if info.builtin:
        from .words import build_words_dataset

        texts, labels, split_names = build_words_dataset(seed=seed, val_fraction=val_fraction,
                                                         test_fraction=test_fraction)
        table = Table(texts, labels, split_names, 0, "wordfreq")
        return splits_from_table(table, val_fraction, test_fraction, seed, name=spec)
    root = ensure_dataset(spec, data_dir, progress=progress)
    if spec == "surnames":
        table = read_table(root / info.files[0], "surname", "nationality")
        splits = splits_from_table(table, val_fraction, test_fraction, seed, name=spec)
    elif spec == "names":
        table = read_label_folder(root / info.files[0])
        splits = splits_from_table(table, val_fraction, test_fraction, seed, drop_duplicates, name=spec)
    else:  # nsmc
        files = {"train": root / info.files[0], "test": root / info.files[1]}
        splits = load_split_files(files, "document", "label", val_fraction, seed, name=spec)
    splits.source = str(root)
    return splits


def describe_datasets(data_dir: Optional[str] = None) -> list[dict]:
    """One row per named dataset: where it was found and its size on disk (for ``rnnkit datasets``)."""
    rows = []
    for info in DATASETS.values():
        if info.builtin:
            rows.append({"name": info.name, "found": "built in", "size_bytes": 0, "description": info.description})
            continue
        root = find_dataset(info.name, data_dir)
        size = 0
        if root is not None:
            for rel in info.files:
                p = root / rel
                size += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        rows.append({
            "name": info.name,
            "found": str(root) if root else "missing (downloaded on first use when online)",
            "size_bytes": size,
            "description": info.description,
        })
    return rows
