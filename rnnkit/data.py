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
import re
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .errors import RnnkitError

TEXT_COLUMNS = ("text", "document", "sentence", "review", "surname", "name", "word", "content")
LABEL_COLUMNS = ("label", "labels", "class", "category", "categories", "nationality", "language", "languages", "target",
                 "y", "sentiment", "polarity", "emotion", "intent", "topic", "topics", "tags")
PYTHON_DATA = "<data>"
"""The ``dataset`` of a run trained on data passed from Python (``rnnkit.train(data=...)``)."""
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}


@dataclass
class Examples:
    texts: list[str] = field(default_factory=list)
    labels: list = field(default_factory=list)
    """One label (a string) per text, or for multi-label data a tuple of labels (possibly empty)."""

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
    """Human-readable remarks on what loading did (format sniffed, rows skipped, duplicates dropped)."""
    multilabel: bool = False
    """Each label is a tuple of labels: sigmoid outputs, one threshold per label."""

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
    multilabel: bool = False
    notes: list[str] = field(default_factory=list)


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
    """The format a file's name promises: jsonl, csv, tsv, parquet, or ``sniff`` (decided from the content)."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".xlsx", ".xls", ".xlsm", ".ods")):
        raise RnnkitError(f"{path} is a spreadsheet; save it as CSV (UTF-8) and train on that file")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    return "sniff"  # .txt, no extension (SMSSpamCollection), anything else


DELIMITERS = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}
# Names a first row must contain to be taken as a header without further evidence.
HEADER_WORDS = set(TEXT_COLUMNS) | set(LABEL_COLUMNS) | {"split", "id", "title", "body", "tweet", "message", "sms"}
TRUE_CELLS, FALSE_CELLS = {"1", "1.0", "true", "yes", "y", "t"}, {"0", "0.0", "false", "no", "n", "f"}


def _quoting(delimiter: str) -> int:
    # Tab-separated files are read verbatim: NSMC reviews hold stray quotes that csv would swallow.
    return csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def sniff_delimiter(content: str, prefer: str = "\t") -> Optional[str]:
    """The delimiter that splits the first rows into the same number (>= 2) of fields, or None.

    Tried in a fixed order (``prefer`` first); the first one that gives one field count for
    at least 90% of the sampled rows wins, else the most consistent one.
    """
    sample = content[:200_000]
    order = [prefer] + [d for d in DELIMITERS if d != prefer]
    best = None
    for d in order:
        rows = [r for r in csv.reader(io.StringIO(sample, newline=""), delimiter=d, quoting=_quoting(d)) if r][:500]
        if len(rows) > 1 and len(sample) == 200_000:
            rows = rows[:-1]  # the sample may end inside a row
        counts = Counter(len(r) for r in rows)
        if not counts:
            continue
        width, freq = counts.most_common(1)[0]
        share = freq / len(rows)
        if width >= 2 and share >= 0.9:
            return d
        if width >= 2 and (best is None or share > best[1]):
            best = (d, share)
    return best[0] if best else None


def sniff_header(rows: list[list[str]]) -> tuple[bool, str]:
    """Whether ``rows[0]`` is a header, and why (shown in the log)."""
    first = [c.strip() for c in rows[0]]
    named = [c for c in first if c.lower() in HEADER_WORDS]
    if named:
        return True, f"the first row names columns ({', '.join(named)})"
    body = rows[1:2001]
    if not body:
        return True, "the file has a single row"
    for j, cell in enumerate(first):
        column = [r[j].strip() for r in body if j < len(r)]
        if not column:
            continue
        values = Counter(column)
        if len(values) <= max(2, len(column) // 5) and cell in values:
            return False, f"the first row's {cell[:30]!r} is also a value of column {j + 1}"
        numeric = sum(map(_is_number, column)) / len(column)
        if numeric > 0.95:
            if _is_number(cell):
                return False, f"the first row's {cell[:30]!r} is a number like the rest of column {j + 1}"
            return True, f"the first row's {cell[:30]!r} is not a number, unlike the rest of column {j + 1}"
    if all(re.fullmatch(r"[A-Za-z_][\w .-]{0,39}", c) for c in first) and len(set(first)) == len(first):
        return True, "the first row holds short, distinct names"
    return False, "the first row reads like data"


def _read_delimited(path: Path, content: str, fmt: str, delimiter: Optional[str], header: Optional[bool],
                    notes: list[str]) -> tuple[list[str], list[dict], int]:
    """Columns, rows as dicts and the line number of the first row of a delimited file."""
    sniffed = delimiter is None
    if delimiter is None:
        if fmt == "tsv":
            delimiter = "\t"
        else:
            delimiter = sniff_delimiter(content, prefer="," if fmt == "csv" else "\t")
            if delimiter is None:
                raise RnnkitError(f"cannot tell how the columns of {path} are separated (tried tab, comma, semicolon, "
                                  "pipe); pass --delimiter, or give one example per line in a .jsonl file")
    elif len(delimiter) != 1:
        raise RnnkitError(f"--delimiter must be one character (use '\\t' for tab); got {delimiter!r}")
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter, quoting=_quoting(delimiter))
    rows, lines = [], []
    try:
        for row in reader:
            if row and any(c.strip() for c in row):
                rows.append(row)
                lines.append(reader.line_num)
    except csv.Error as exc:
        raise RnnkitError(f"{path}:{reader.line_num}: {exc}; check the quoting or pass --delimiter") from None
    if not rows:
        raise RnnkitError(f"{path} has no rows")
    how = "--header/--no-header"
    if header is None:
        header, why = sniff_header(rows)
        decided = f"{'a header' if header else 'no header'} ({why}; {how} to override)"
    else:
        decided = f"{'a header' if header else 'no header'} (as told)"
    name = DELIMITERS.get(delimiter, repr(delimiter))
    notes.append(f"{path.name}: {name}-separated{' (sniffed)' if sniffed and fmt != 'tsv' else ''}, {decided}")
    width = len(rows[0])
    for row, line in zip(rows, lines):
        if len(row) != width:
            raise RnnkitError(
                f"{path}: line {line} has {len(row)} fields but the {'header' if header else 'first row'} has "
                f"{width}; quote fields that contain the {name} character, or pass the right --delimiter")
    if header:
        columns = [c.strip() for c in rows[0]]
        if len(set(columns)) != len(columns):
            raise RnnkitError(f"{path}: the header repeats a column name ({', '.join(columns)}); make them unique")
        if len(rows) == 1:
            raise RnnkitError(f"{path} has a header but no rows")
        return columns, [dict(zip(columns, r)) for r in rows[1:]], lines[1]
    columns = [f"col{j + 1}" for j in range(width)]
    return columns, [dict(zip(columns, r)) for r in rows], lines[0]


def _read_jsonl(path: Path, content: str) -> list[dict]:
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
    return rows


def _read_parquet(path: Path) -> list[dict]:
    if not path.exists():
        raise RnnkitError(f"file not found: {path}")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise RnnkitError("reading Parquet needs pyarrow: pip install 'rnnkit[parquet]' (or pip install pyarrow)") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow's errors are many; the message says what is wrong
        raise RnnkitError(f"cannot read {path} as Parquet ({str(exc).splitlines()[0]})") from None


def _column_stats(columns: Sequence[str], rows: list[dict]) -> dict[str, dict]:
    sample = rows[:5000]
    stats = {}
    for c in columns:
        values = [r.get(c) for r in sample]
        cells = ["|".join(map(str, v)) if isinstance(v, (list, tuple)) else ("" if v is None else str(v).strip())
                 for v in values]
        stats[c] = {"mean_len": sum(map(len, cells)) / max(1, len(cells)), "distinct": len(set(cells)),
                    "lists": any(isinstance(v, (list, tuple)) for v in values), "n": len(cells)}
    return stats


def choose_columns(columns: Sequence[str], rows: list[dict], text_column: Optional[str], label_column: Optional[str],
                   label_columns: Optional[Sequence[str]], require_labels: bool, path, notes: list[str]
                   ) -> tuple[str, Optional[str]]:
    """The text column and the (single) label column: as told, by name, or from the values.

    Unnamed columns are guessed only where the guess is safe: the label is the one column with
    few distinct, short values (else an error lists the columns), the text the longest of the rest.
    """
    listed = ", ".join(columns)
    for wanted, what in ((text_column, "text"), (label_column, "label")):
        if wanted is not None and wanted not in columns:
            raise RnnkitError(f"{path} has no column {wanted!r} (columns: {listed}); pass the right one with --{what}-column")
    for wanted in label_columns or ():
        if wanted not in columns:
            raise RnnkitError(f"{path} has no column {wanted!r} named in --label-columns (columns: {listed})")
    lowered = {c.lower(): c for c in columns}
    by_name = lambda guesses: next((lowered[g] for g in guesses if g in lowered), None)  # noqa: E731
    split_col = lowered.get("split")
    stats = _column_stats(columns, rows)
    taken = set(label_columns or ()) | {split_col}
    text = text_column or by_name(TEXT_COLUMNS)
    label = label_column if label_column is not None or label_columns else by_name(LABEL_COLUMNS)
    guessed = []
    if label is None and not label_columns:
        # A label value repeats: on average at least twice, and never more than 1,000 distinct values.
        few = lambda s: s["distinct"] <= min(1000, max(2, s["n"] // 2)) and s["mean_len"] <= 50  # noqa: E731
        candidates = [c for c in columns if c not in taken and c != text and (few(stats[c]) or stats[c]["lists"])]
        if len(candidates) == 1:
            label = candidates[0]
            guessed.append(f"label = {label} ({stats[label]['distinct']} distinct values)")
        elif require_labels:
            shown = ", ".join(f"{c} ({stats[c]['distinct']} values)" for c in (candidates or columns))
            raise RnnkitError(f"cannot tell which column of {path} holds the label "
                              f"({'candidates' if candidates else 'columns'}: {shown}); pass it with --label-column "
                              "(or --label-columns a,b,c for 0/1 columns)")
    if text is None:
        rest = [c for c in columns if c not in taken and c != label]
        if not rest:
            raise RnnkitError(f"cannot tell which column of {path} holds the text (columns: {listed}); "
                              "pass it with --text-column")
        text = max(rest, key=lambda c: stats[c]["mean_len"])
        guessed.append(f"text = {text} (longest values, {stats[text]['mean_len']:.0f} characters on average)")
    if text == label or text in (label_columns or ()):
        raise RnnkitError(f"{path}: column {text!r} cannot be both the text and a label; pass --text-column")
    if guessed:
        notes.append(f"columns: {'; '.join(guessed)} (--text-column/--label-column to override)")
    elif label is not None:
        notes.append(f"columns: text = {text}, label = {label}")
    return text, label


def _flag(cell, column: str, path, lineno: int) -> bool:
    value = str(cell).strip().lower() if cell is not None else ""
    if value in TRUE_CELLS:
        return True
    if value in FALSE_CELLS:
        return False
    raise RnnkitError(f"{path}: row {lineno} has {cell!r} in label column {column!r}; "
                      "--label-columns needs 0/1 (or true/false) in every cell")


def _sniff_label_sep(cells: list, notes: list[str]) -> Optional[str]:
    """'|' or ';' when label cells obviously hold several labels: some cells join labels that also occur alone."""
    strings = [c for c in cells if isinstance(c, str)]
    for sep in ("|", ";"):
        joined = [c for c in strings if sep in c]
        if len(joined) < 2:
            continue
        parts = {p.strip() for c in strings for p in c.split(sep) if p.strip()}
        if len(parts) < len(set(strings)):
            notes.append(f"labels: multi-label ({len(joined):,} of {len(strings):,} cells hold several labels "
                         f"joined by {sep!r}; --label-sep off to read each cell as one label)")
            return sep
    return None


def table_from_rows(columns: Sequence[str], rows: list[dict], path, text_column=None, label_column=None,
                    require_labels: bool = True, label_sep: Optional[str] = None,
                    label_columns: Optional[Sequence[str]] = None, first_line: int = 1,
                    notes: Optional[list[str]] = None) -> "Table":
    """Rows (dicts) -> :class:`Table`: pick the columns, read texts, labels (single or multi) and splits.

    Rows whose text is empty are skipped and counted (NSMC has a few); a row with an empty
    label is an error, since guessing one would poison training. With ``require_labels=False``
    a missing label column is allowed (for prediction input) and labels come back empty.
    """
    notes = notes if notes is not None else []
    if not rows:
        raise RnnkitError(f"{path} has a header but no rows")
    label_columns = list(label_columns) if label_columns else None
    text_col, label_col = choose_columns(columns, rows, text_column, label_column, label_columns, require_labels,
                                         path, notes)
    split_col = next((c for c in columns if c.lower() == "split"), None)
    multilabel = bool(label_columns)
    sep = None if label_sep in (None, "off") else label_sep
    if label_col is not None and not label_columns:
        cells = [r.get(label_col) for r in rows]
        if any(isinstance(c, (list, tuple)) for c in cells):
            multilabel = True
        elif label_sep is None:
            sep = _sniff_label_sep(cells, notes)
        multilabel = multilabel or sep is not None
    texts, labels, splits, skipped = [], [], [] if split_col else None, 0
    for lineno, row in enumerate(rows, first_line):
        text = row.get(text_col)
        text = "" if text is None else str(text).strip()
        if not text:
            skipped += 1
            continue
        if label_columns:
            labels.append(tuple(c for c in label_columns if _flag(row.get(c), c, path, lineno)))
        elif label_col is not None:
            cell = row.get(label_col)
            if isinstance(cell, (list, tuple)):
                parts = [str(p).strip() for p in cell]
            else:
                cell = "" if cell is None else str(cell).strip()
                parts = [p.strip() for p in cell.split(sep)] if sep else [cell]
            parts = [p for p in parts if p]
            if not parts:
                raise RnnkitError(f"{path}: row {lineno} has an empty {label_col!r}; fill it in or drop the row")
            labels.append(tuple(sorted(set(parts))) if multilabel else parts[0])
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
    return Table(texts, labels, splits, skipped, str(path), multilabel=multilabel, notes=notes)


def read_table(path, text_column: Optional[str] = None, label_column: Optional[str] = None,
               require_labels: bool = True, *, header: Optional[bool] = None, delimiter: Optional[str] = None,
               label_sep: Optional[str] = None, label_columns: Optional[Sequence[str]] = None) -> Table:
    """Read a delimited (CSV, TSV, ...), JSONL or Parquet file of labelled texts.

    The format comes from the extension, or from the content when the name has none it knows
    (``SMSSpamCollection``): JSON lines, else the delimiter that splits every row alike. A
    header is detected (``header=None``) or as told. What was decided is in ``table.notes``.
    ``label_sep`` splits a label cell into several labels (multi-label; ``None`` detects an
    obvious '|' or ';', ``"off"`` never splits); ``label_columns`` reads 0/1 columns as labels.
    """
    path = Path(path)
    fmt = _format_of(path)
    notes: list[str] = []
    first_line = 1
    if fmt == "parquet":
        rows = _read_parquet(path)
        columns = list(dict.fromkeys(k for r in rows[:100] for k in r))
    else:
        content = read_text_file(path)
        if fmt == "sniff" and content.lstrip().startswith("{"):
            fmt = "jsonl"
            notes.append(f"{path.name}: JSON lines (sniffed)")
        if fmt == "jsonl":
            rows = _read_jsonl(path, content)
            columns = list(dict.fromkeys(k for r in rows[:100] for k in r))
            if not notes:
                notes.append(f"{path.name}: JSON lines, keys {', '.join(columns[:10])}")
        else:
            columns, rows, first_line = _read_delimited(path, content, fmt, delimiter, header, notes)
    return table_from_rows(columns, rows, path, text_column, label_column, require_labels, label_sep,
                           label_columns, first_line, notes)


def table_from_data(data, text_column: Optional[str] = None, label_column: Optional[str] = None,
                    label_sep: Optional[str] = None, label_columns: Optional[Sequence[str]] = None) -> Table:
    """A pandas DataFrame or a list of ``(text, label)`` pairs (label: a string, or a list for multi-label)."""
    if hasattr(data, "columns") and hasattr(data, "to_dict"):
        columns = [str(c) for c in data.columns]
        rows = [{str(k): v for k, v in r.items()} for r in data.to_dict("records")]
        source = f"DataFrame ({len(rows):,} rows)"
    elif isinstance(data, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in data):
        columns = ["text", "label"]
        rows = [{"text": t, "label": y} for t, y in data]
        source = f"{len(rows):,} (text, label) pairs"
    else:
        raise RnnkitError(f"data must be a pandas DataFrame or a list of (text, label) pairs; got "
                          f"{type(data).__name__}" + (" whose items are not all pairs" if isinstance(data, list) else ""))
    if not rows:
        raise RnnkitError("data is empty; give at least a few labelled texts per class")
    return table_from_rows(columns, rows, source, text_column, label_column, True, label_sep, label_columns, 1)


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


def stratified_split(labels: Sequence, val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Assign each index to train/val/test so every class keeps its share.

    Per class the counts are rounded, so a class of 5 with 10% test gets one
    test example (round-half-even aside) and tiny classes stay in train.
    Multi-label examples (tuples) are grouped by their rarest label, so rare
    labels reach val and test too; an example with no label is a group of its own.
    """
    if any(isinstance(y, tuple) for y in labels):
        freq = Counter(l for y in labels for l in y)
        labels = [min(y, key=lambda l: (freq[l], l)) if y else "" for y in labels]
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
    notes = list(table.notes)
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
    return Splits(parts["train"], parts["val"], parts["test"], name=name, source=table.path, notes=notes,
                  multilabel=table.multilabel)


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
              seed=0, drop_duplicates=True, **read) -> Splits:
    """Load any supported file or folder into :class:`Splits`; ``read``: options of :func:`read_table`."""
    path = Path(path)
    if not path.exists():
        raise RnnkitError(f"dataset path not found: {path}; give a file, a folder, or a named dataset ({', '.join(DATASETS)})")
    if path.is_file():
        table = read_table(path, text_column, label_column, **read)
        return splits_from_table(table, val_fraction, test_fraction, seed, drop_duplicates, name=path.stem)
    files = split_files(path)
    if "train" in files and "test" in files:
        return load_split_files(files, text_column, label_column, val_fraction, seed, name=path.name, **read)
    return splits_from_table(read_label_folder(path), val_fraction, test_fraction, seed, drop_duplicates, name=path.name)


def load_split_files(files: dict[str, Path], text_column=None, label_column=None, val_fraction=0.1,
                     seed=0, name="", **read) -> Splits:
    """Separate train/(val)/test files; without a val file, val is carved from train by seed."""
    tables = {s: read_table(p, text_column, label_column, **read) for s, p in files.items()}
    if len({t.multilabel for t in tables.values()}) > 1:
        raise RnnkitError(f"the split files of {name} disagree on multi-label cells; pass --label-sep (or off)")
    notes = [n for t in tables.values() for n in t.notes]
    notes += [f"skipped {t.skipped_empty} rows with empty text in {Path(t.path).name}"
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
    return Splits(train, val, test, name=name, source=str(files["train"].parent), notes=notes,
                  multilabel=tables["train"].multilabel)


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
                 drop_duplicates: bool = True, progress: bool = True, **read) -> Splits:
    """Load a named dataset or a path into :class:`Splits`.

    ``read``: how to read a file (``header``, ``delimiter``, ``label_sep``, ``label_columns``;
    see :func:`read_table`).

    >>> splits = load_dataset("words")
    >>> sorted(splits.sizes())
    ['test', 'train', 'val']
    """
    if spec not in DATASETS:
        if Path(spec).exists() or any(c in spec for c in "/\\."):
            return load_path(spec, text_column, label_column, val_fraction, test_fraction, seed, drop_duplicates,
                             **read)
        raise RnnkitError(f"unknown dataset {spec!r}: use one of {', '.join(DATASETS)} or a path to a file or folder")
    read = {k: v for k, v in read.items() if v is not None}
    if read:
        raise RnnkitError(f"{', '.join(read)} apply to your own files, not to the named dataset {spec!r}")
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


def load_config_splits(cfg, progress: Optional[bool] = None) -> Splits:
    """The splits a :class:`rnnkit.Config` describes: its dataset, split settings and file-reading options."""
    return load_dataset(cfg.dataset, cfg.data_dir, cfg.text_column, cfg.label_column, cfg.val_fraction,
                        cfg.test_fraction, cfg.seed, cfg.dedupe, cfg.progress if progress is None else progress,
                        **cfg.read_options())


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
