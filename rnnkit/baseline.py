"""The linear baseline: TF-IDF over character (and word) n-grams with a linear SVM.

A recurrent classifier is only worth its minutes if it beats this. ``rnnkit train`` fits
it on the same training split, picks its few settings on the same validation split and
scores it on the same test split, then reports both side by side::

    >>> result = fit_baseline(splits, labels)              # doctest: +SKIP
    >>> result["settings"], result["test"]["accuracy"]    # doctest: +SKIP
    ({'features': 'char 1-4', 'C': 0.3, 'min_df': 1}, 0.7765)

What it tries, in order (every fit is cheap; the whole search takes seconds on
surnames and about half a minute on NSMC's 150,000 reviews):

1. character n-grams inside word boundaries (scikit-learn's ``char_wb``) of lengths
   1-3, 1-4 and 1-5, sublinear TF-IDF, ``LinearSVC(C=0.3)``;
2. where documents have several words: word unigrams + bigrams, and the best
   character set stacked with them;
3. C in {0.1, 0.3, 1.0} for the best feature set.

The counts are taken once at the longest n-gram length and cut down by column, so
trying three lengths costs one pass over the text. They are scikit-learn's
``CountVectorizer`` matrices, computed without its Python loop over every n-gram
(:func:`char_wb_counts`, :func:`word_counts`): on NSMC counting took 8 s instead of 30.
Texts go through the run's own normalization (``Tokenizer.prepare``: NFC, lowercase,
repeat squeezing) first; the n-grams need no tokenizer, so this works for every
language rnnkit reads.
scikit-learn is imported here only, so ``import rnnkit`` stays light.
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence

import numpy as np

from .data import Splits
from .errors import RnnkitError

CHAR_LENGTHS = (3, 4, 5)
C_VALUES = (0.1, 0.3, 1.0)
FIRST_C = 0.3
# Above this many training documents, n-grams seen once are dropped: they cannot generalize
# and they triple the feature count on NSMC.
MIN_DF_FROM = 20_000
WORD_PATTERN = r"(?u)\b\w+\b"
BACKGROUND_FROM = 5_000
"""Training texts from which ``rnnkit train`` fits the baseline beside training (:class:`BaselineJob`).
Surnames (7,680) gains 2-4 s of its 54 s so; much below, training is too short to hide the second
interpreter's start."""


def _report(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict:
    from .metrics import classification_report, multilabel_report

    if y_true.ndim == 2:  # multi-label: 0/1 predictions, so any threshold in (0, 1] reads them alike
        full = multilabel_report(y_true, y_pred, np.full(len(labels), 0.5), labels)
        return {k: full[k] for k in ("accuracy", "subset_accuracy", "micro_f1", "macro_f1", "weighted_f1", "n")}
    full = classification_report(y_true, y_pred, labels)
    return {k: full[k] for k in ("accuracy", "macro_f1", "weighted_f1", "n")}


def _label_ids(values: Sequence, index: dict, split: str) -> np.ndarray:
    """Class indices ``(n,)``, or multi-hot rows ``(n, C)`` when the labels are tuples (multi-label)."""
    try:
        if values and isinstance(values[0], tuple):
            out = np.zeros((len(values), len(index)), dtype=np.int64)
            for i, labels in enumerate(values):
                out[i, [index[v] for v in labels]] = 1
            return out
        return np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))
    except KeyError as exc:
        raise RnnkitError(f"label {exc.args[0]!r} of the {split} split does not occur in train; "
                          "every class needs training examples") from None


def _counts_matrix(docs: np.ndarray, cols: np.ndarray, n_docs: int, n_cols: int):
    """How often each column occurs in each doc: CSR ``(n_docs, n_cols)``, float32, indices sorted."""
    from scipy import sparse

    # Duplicates are summed row by row (scipy sorts each short row), far cheaper than one global sort.
    out = sparse.csr_matrix((np.ones(len(cols), dtype=np.float32), (docs, cols)), shape=(n_docs, n_cols))
    out.sum_duplicates()
    return out


def _key_counts(keys, docs, n_docs: list[int], names: list[str], min_df: int):
    """One matrix per split from n-grams given as integers ``keys`` found in documents ``docs``
    (numbered across the splits in order): ``({split: csr}, sorted vocabulary)``, the vocabulary
    being the train keys in at least ``min_df`` train documents; None when there is none."""
    import torch

    bounds = np.cumsum([0] + n_docs)
    in_train = docs < int(bounds[1])
    vocab, cols = torch.unique(keys[in_train], sorted=True, return_inverse=True)
    train = _counts_matrix(docs[in_train].numpy(), cols.numpy(), n_docs[0], len(vocab))
    kept = np.bincount(train.indices, minlength=len(vocab)) >= min_df
    if not kept.any():
        return None
    if not kept.all():
        vocab = vocab[torch.from_numpy(kept)]
        train = train[:, kept]  # scipy keeps each row's columns in order: the selection is monotone
    mats = {names[0]: train}
    for i, s in enumerate(names[1:], start=1):
        mine = (docs >= int(bounds[i])) & (docs < int(bounds[i + 1]))
        k = keys[mine]
        col = torch.searchsorted(vocab, k).clamp_(max=len(vocab) - 1)
        found = vocab[col] == k
        mats[s] = _counts_matrix((docs[mine][found] - int(bounds[i])).numpy(), col[found].numpy(),
                                 n_docs[i], len(vocab))
    return mats, vocab


def word_counts(texts: dict[str, Sequence[str]], min_df: int = 1):
    """scikit-learn's ``CountVectorizer(analyzer="word", token_pattern=WORD_PATTERN, ngram_range=(1, 2),
    min_df=min_df, dtype=np.float32)`` fit on ``texts["train"]`` and applied to every split:
    ``{split: csr (docs, features)}``, the same matrices, or None when no n-gram is left.

    Words get their rank in sorted order; a unigram is ``rank * (words + 1)`` and a bigram
    ``rank(first) * (words + 1) + rank(second) + 1``. Integer order is then scikit-learn's string
    order, because the space joining a bigram sorts before every character a word can hold.
    """
    import torch

    names = list(texts)
    find = re.compile(WORD_PATTERN).findall
    docs_words = [find(t.lower()) for s in names for t in texts[s]]
    number: dict[str, int] = {}
    ids = np.fromiter((number.setdefault(w, len(number)) for words in docs_words for w in words), dtype=np.int64)
    rank = np.empty(len(number), dtype=np.int64)
    rank[[number[w] for w in sorted(number)]] = np.arange(len(number))
    n_docs = [len(texts[s]) for s in names]
    per_doc = np.fromiter(map(len, docs_words), dtype=np.int64, count=len(docs_words))
    doc_of = torch.from_numpy(np.repeat(np.arange(len(docs_words), dtype=np.int32), per_doc))
    ranks = torch.from_numpy(rank[ids])
    width = len(number) + 1
    pairs = doc_of[1:] == doc_of[:-1]  # word i and i + 1 in the same document
    keys = torch.cat([ranks * width, (ranks[:-1] * width + ranks[1:] + 1)[pairs]])
    counted = _key_counts(keys, torch.cat([doc_of, doc_of[:-1][pairs]]), n_docs, names, min_df)
    return None if counted is None else counted[0]


def char_wb_counts(texts: dict[str, Sequence[str]], longest: int, min_df: int = 1):
    """scikit-learn's ``CountVectorizer(analyzer="char_wb", ngram_range=(1, longest), min_df=min_df,
    dtype=np.float32)`` fit on ``texts["train"]`` and applied to every split, without its Python loop
    over n-grams: ``({split: csr (docs, features)}, n-gram length of each feature)``.

    The same matrices (values, columns and their order) as scikit-learn. Each n-gram becomes one
    integer: its characters' ranks in the corpus alphabet, first character in the highest bits and
    unused places zero, so integer order is scikit-learn's string order. The array work runs in torch,
    whose ``unique`` (with the inverse) and ``searchsorted`` took 1.5 s and 1.1 s on 30M keys against
    numpy's 10.6 s and 4.4 s. Returns None where
    the integer does not fit in 63 bits (an alphabet of more than ``2**(63 // longest) - 1``
    characters: 4,095 at 5-grams), the text holds lone surrogates, or no n-gram is left after
    ``min_df``; the caller then counts with scikit-learn.
    """
    import torch

    names = list(texts)
    # char_wb: each whitespace-separated word padded with one space on both sides, n-grams inside that.
    padded = [f" {'  '.join(words)} " if (words := t.lower().split()) else "" for s in names for t in texts[s]]
    try:
        codes = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32)
    except UnicodeEncodeError:  # lone surrogates
        return None
    # Each character's rank in the alphabet, from 1 (0 marks "no character"), by a table lookup.
    seen = np.bincount(codes) > 0
    bits = int(seen.sum()).bit_length()
    if not len(codes) or bits * longest > 63:
        return None
    size = len(codes)
    ids = torch.from_numpy(np.cumsum(seen, dtype=np.int64)[codes])
    spaces = torch.from_numpy(np.flatnonzero(codes == ord(" ")))  # only the pads: words hold no whitespace
    starts, ends = spaces[0::2], spaces[1::2] + 1
    room = torch.repeat_interleave(ends, ends - starts) - torch.arange(size)  # characters left in the word
    n_docs = [len(texts[s]) for s in names]
    doc_of = torch.repeat_interleave(torch.arange(sum(n_docs), dtype=torch.int32),
                                     torch.tensor([len(p) for p in padded]))
    key = torch.zeros(size, dtype=torch.int64)
    keys, docs = [], []
    for n in range(1, longest + 1):
        # A padded word of length L gives every window of each n <= L (at n == L: the word itself once),
        # which is what scikit-learn's loop gives when n-grams start at length 1.
        key[:size - n + 1] |= ids[n - 1:] << bits * (longest - n)
        valid = (room[:size - n + 1] >= n).nonzero().squeeze(1)
        keys.append(key[valid])
        docs.append(doc_of[valid])
    del ids, room, key
    keys, docs = torch.cat(keys), torch.cat(docs)  # (the lists go: peak memory is what counts here)
    counted = _key_counts(keys, docs, n_docs, names, min_df)
    if counted is None:
        return None
    mats, vocab = counted
    # The n-gram's length: places that hold a character, counted from the highest.
    lengths = sum((((vocab >> bits * (longest - n)) & ((1 << bits) - 1)) > 0).long() for n in range(1, longest + 1))
    return mats, lengths.numpy()


def _check_splits(splits: Splits) -> None:
    if len(splits.train) == 0 or len(splits.val) == 0:
        raise RnnkitError("the linear baseline needs train and val examples; give both splits or use --no-baseline")


def fit_baseline(splits: Splits, labels: Optional[Sequence[str]] = None,
                 prepare: Optional[Callable[[str], str]] = None,
                 log: Callable[[str], None] = lambda m: None) -> dict:
    """Fit, tune on val and score on test the linear n-gram baseline for ``splits``.

    ``labels`` fixes the class order (the run's vectorizer order; default: sorted train
    labels), ``prepare`` normalizes each text first. Returns the JSON-ready dict stored
    under ``"baseline"`` in a run's ``metrics.json``::

        {"val": {"accuracy", "macro_f1", "weighted_f1", "n"}, "test": {...},
         "seconds": float, "settings": {"features", "C", "min_df"},
         "tried": [{"features", "C", "val_accuracy"}, ...]}
    """
    started = time.perf_counter()  # scikit-learn's import counts: a run pays it (1.5 s warm, 7+ s from a cold disk)
    from scipy import sparse
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
    from sklearn.svm import LinearSVC

    _check_splits(splits)
    if labels is None:
        labels = sorted({l for y in splits.train.labels for l in y} if splits.multilabel else set(splits.train.labels))
    labels = list(labels)
    index = {label: i for i, label in enumerate(labels)}
    names = [s for s in ("train", "val", "test") if len(splits[s])]
    texts = {s: [prepare(t) for t in splits[s].texts] if prepare else list(splits[s].texts) for s in names}
    y = {s: _label_ids(splits[s].labels, index, s) for s in names}
    min_df = 2 if len(texts["train"]) >= MIN_DF_FROM else 1

    char_counts, char_lengths = char_wb_counts(texts, max(CHAR_LENGTHS), min_df) or ({}, None)
    if not char_counts:  # what the fast counter leaves to scikit-learn (see char_wb_counts)
        vectorizer = CountVectorizer(analyzer="char_wb", ngram_range=(1, max(CHAR_LENGTHS)), min_df=min_df,
                                     dtype=np.float32)
        try:
            char_counts = {"train": vectorizer.fit_transform(texts["train"])}
            char_counts.update({s: vectorizer.transform(texts[s]) for s in names if s != "train"})
            char_lengths = np.array([len(n) for n in vectorizer.get_feature_names_out()])
        except ValueError:  # every training text is empty after min_df: nothing to learn from
            char_counts = {}
    words_per_doc = np.mean([len(t.split()) for t in texts["train"]])
    word_mats: dict = {}
    if words_per_doc >= 2:
        word_mats = word_counts(texts, min_df) or {}
    if not char_counts and not word_mats:
        raise RnnkitError("the linear baseline found no n-grams in the training texts; are they empty?")

    def tfidf(mats: dict, columns: Optional[np.ndarray] = None) -> dict:
        if columns is not None:
            mats = {s: m[:, columns] for s, m in mats.items()}
        weigh = TfidfTransformer(sublinear_tf=True).fit(mats["train"])
        return {s: weigh.transform(m).astype(np.float32) for s, m in mats.items()}

    features: dict[str, dict] = {}
    for n in CHAR_LENGTHS if char_counts else ():
        features[f"char 1-{n}"] = tfidf(char_counts, char_lengths <= n)
    tried: list[dict] = []
    models: dict = {}

    def fit_one(name: str, c: float):
        mats = features[name]
        model = LinearSVC(C=c, random_state=0, max_iter=2000)
        if y["train"].ndim == 2:  # multi-label: one SVM per label
            from sklearn.multiclass import OneVsRestClassifier

            model = OneVsRestClassifier(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a near-converged SVM still ranks fine
            warnings.simplefilter("ignore", UserWarning)  # a label never present in train: always predicted 0
            model.fit(mats["train"], y["train"])
        n_val = len(y["val"])
        # (subset) accuracy: every label of an example right
        acc = float((model.predict(mats["val"]).reshape(n_val, -1) == y["val"].reshape(n_val, -1)).all(1).mean())
        return acc, model

    def fit(*settings: tuple[str, float]) -> None:
        # liblinear lets go of the GIL, so independent fits share the cores: two threads took the whole
        # baseline from 55.3 s to 51.5 s on NSMC (7 fits of about 2.4 s each; counting n-grams is most
        # of the rest) and from 1.27 s to 0.96 s on surnames. At most two at a time, since each fit
        # holds its own copy of the features. Results are recorded in the order given.
        with ThreadPoolExecutor(min(2, len(settings), os.cpu_count() or 1)) as pool:
            done = list(pool.map(lambda setting: fit_one(*setting), settings))
        for (name, c), (acc, model) in zip(settings, done):
            tried.append({"features": name, "C": c, "val_accuracy": acc})
            models[(name, c)] = model

    if word_mats:
        features["words 1-2"] = tfidf(word_mats)
    fit(*((name, FIRST_C) for name in features))
    if word_mats and char_counts:
        best_char = max((t for t in tried if t["features"].startswith("char")), key=lambda t: t["val_accuracy"])
        both = f"{best_char['features']} + words 1-2"
        features[both] = {s: sparse.hstack([features[best_char["features"]][s], features["words 1-2"][s]],
                                           format="csr") for s in names}
        fit((both, FIRST_C))
    # max() keeps the first of equals: the simpler feature set and the middle C.
    best_features = max(tried, key=lambda t: t["val_accuracy"])["features"]
    fit(*((best_features, c) for c in C_VALUES if c != FIRST_C))
    best = max(tried, key=lambda t: t["val_accuracy"])
    model, mats = models[(best["features"], best["C"])], features[best["features"]]
    result = {s: _report(y[s], model.predict(mats[s]), labels) for s in ("val", "test") if s in names}
    result.update(seconds=round(time.perf_counter() - started, 2),
                  settings={"features": best["features"], "C": best["C"], "min_df": min_df,
                            "model": "TF-IDF (sublinear) + LinearSVC"},
                  tried=tried)
    log(summary_line(result))
    return result


def summary_line(result: dict) -> str:
    """``baseline: linear SVM on char 1-3 n-grams, C=0.3: val accuracy ... (32.2s, 7 fits)``."""
    where = (f"beside training at idle priority: {result['seconds']:.1f}s wall, {result['cpu_seconds']:.1f}s CPU"
             if result.get("background") else f"{result['seconds']:.1f}s")
    return (f"baseline: linear SVM on {result['settings']['features']} n-grams, C={result['settings']['C']}: "
            + "  ".join(f"{s} accuracy {result[s]['accuracy']:.4f} macro-F1 {result[s]['macro_f1']:.4f}"
                        for s in ("val", "test") if s in result)
            + f"  ({where}, {len(result['tried'])} fits)")


class BaselineJob:
    """The baseline of a training run, fitted while the network trains.

    On NSMC the fits take half a minute, and training leaves part of the CPU idle (an NSMC epoch
    keeps 1.8 of 2 cores busy). So from :data:`BACKGROUND_FROM` training texts, on Linux, ``rnnkit
    train`` fits the baseline in a separate Python process under ``SCHED_IDLE``, which the kernel
    runs only on a core nothing else wants, and collects the result at the end. ``nice 19`` is not
    enough: against a baseline loop NSMC steps took a median 87.0 ms at nice 19 and 59.1 ms under
    ``SCHED_IDLE``, against 57.6 ms alone. Smaller data, and systems without ``SCHED_IDLE``, fit
    on the spot: a second interpreter would cost more than the fit. A process, not a thread: the
    counting holds the GIL. It is started as ``python -m rnnkit.baseline FILE``, so a user's
    script is never re-imported (``multiprocessing``'s spawn would run an unguarded script again).
    Its input goes through a private temporary file, not a pipe: a thread feeding 20 MB through a
    pipe to an idle-priority reader competed with training for the GIL, and the first epoch's time
    forecast said 2 min for an 80 s epoch.
    """

    def __init__(self, splits: Splits, labels: Optional[Sequence[str]], prepare: Optional[Callable[[str], str]],
                 log: Callable[[str], None], background: Optional[bool] = None):
        _check_splits(splits)  # the input errors come now, not after training
        self._log = log
        self._result: Optional[dict] = None
        self._proc = None
        self._input = ""
        if background is None:
            background = len(splits.train) >= BACKGROUND_FROM and hasattr(os, "SCHED_IDLE")
        if background:
            try:
                self._start(splits, labels, prepare)
                log(f"baseline: fitting in an idle-priority process beside training ({len(splits.train):,} "
                    "training texts); its result comes at the end")
                return
            except OSError as exc:  # no temporary folder to write, no interpreter to start: fit here, as before
                if self._input:
                    self._remove_input()
                log(f"baseline: no background process ({exc.strerror or exc}); fitting it now")
        self._result = fit_baseline(splits, labels, prepare, log)

    def _start(self, splits: Splits, labels: Optional[Sequence[str]], prepare) -> None:
        import pickle
        import subprocess
        import sys
        import tempfile

        with tempfile.NamedTemporaryFile(prefix="rnnkit-baseline-", suffix=".pickle", delete=False) as f:
            self._input = f.name  # readable by this user only
            pickle.dump((splits, None if labels is None else list(labels), prepare), f,
                        protocol=pickle.HIGHEST_PROTOCOL)
        # One thread per fit and none for OpenMP: the process is meant to fill gaps, not to compete.
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self._proc = subprocess.Popen([sys.executable, "-m", "rnnkit.baseline", self._input],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, env=env)

    def _remove_input(self) -> None:
        try:
            os.unlink(self._input)
        except FileNotFoundError:  # the process removes it once read
            pass

    def done(self) -> bool:
        """True when :meth:`result` will not wait."""
        return self._proc is None or self._proc.poll() is not None

    def result(self) -> Optional[dict]:
        """The baseline's dict (see :func:`fit_baseline`), waiting for it if need be; None if its process
        failed, which is logged: the network's run is complete without it."""
        if self._proc is None:
            return self._result
        import pickle

        proc, self._proc = self._proc, None
        out, _ = proc.communicate()
        self._remove_input()
        try:
            status, value = pickle.loads(out)
        except Exception:  # noqa: BLE001 - killed, or crashed before it could answer
            status, value = "error", f"its process ended with code {proc.returncode}"
        if status == "ok":
            self._result = value
            self._log(summary_line(value))
        else:
            self._log(f"baseline: failed ({value}); the run is complete without it "
                      "(`rnnkit baseline --dataset ...` fits it alone)")
        return self._result

    def cancel(self) -> None:
        """Stop a background fit that is still running (the run failed or was interrupted)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc.stdout.close()
            self._proc = None
            self._remove_input()


def _background_main() -> None:
    """``python -m rnnkit.baseline FILE``: read ``(splits, labels, prepare)`` pickled in FILE (then remove
    it), fit, and answer ``("ok", result)`` or ``("error", message)`` pickled on stdout."""
    import pickle
    import sys

    answer_to, sys.stdout = sys.stdout.buffer, sys.stderr  # a stray print must not garble the answer
    try:  # threads started later inherit it
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # (only asked for where it exists)
        os.nice(19)
    with open(sys.argv[1], "rb") as f:
        splits, labels, prepare = pickle.load(f)
    os.unlink(sys.argv[1])
    started, cpu = time.perf_counter(), time.process_time()
    try:
        result = fit_baseline(splits, labels, prepare)
        result.update(seconds=round(time.perf_counter() - started, 2),
                      cpu_seconds=round(time.process_time() - cpu, 2), background=True)
        answer = ("ok", result)
    except RnnkitError as exc:
        answer = ("error", str(exc))
    except Exception as exc:  # noqa: BLE001 - reported by the parent; the run goes on
        answer = ("error", f"{type(exc).__name__}: {exc}")
    answer_to.write(pickle.dumps(answer))
    answer_to.flush()


def compare_line(split: str, metrics: dict, baseline: Optional[dict]) -> str:
    """``test accuracy 0.8890 (linear baseline 0.8730, +1.6 points)``; without a baseline, the plain numbers."""
    ours = metrics[split]
    theirs = (baseline or {}).get(split)
    multi = "micro_f1" in ours
    line = f"{split} {'subset accuracy' if multi else 'accuracy'} {ours['accuracy']:.4f}"
    if theirs:
        diff = 100 * (ours["accuracy"] - theirs["accuracy"])
        line += f" (linear baseline {theirs['accuracy']:.4f}, {diff:+.1f} points)"
    for key, name in ((("micro_f1", "micro-F1"),) if multi else ()) + (("macro_f1", "macro-F1"),):
        line += f"  {name} {ours[key]:.4f}"
        if theirs and key in theirs:
            line += f" (baseline {theirs[key]:.4f})"
    return line


def behind_note(metrics: dict, baseline: Optional[dict]) -> Optional[str]:
    """A line for a run whose linear baseline leads on validation by more than one standard error of
    the baseline's accuracy there (``sqrt(p (1 - p) / n)``); None when it does not. Validation, not test:
    the run chose its epoch there, so this is the comparison a user may act on."""
    ours, theirs = metrics.get("val"), (baseline or {}).get("val")
    if not ours or not theirs or not ours.get("n"):
        return None
    gap, p, n = theirs["accuracy"] - ours["accuracy"], theirs["accuracy"], ours["n"]
    noise = math.sqrt(p * (1 - p) / n)
    if gap <= noise:
        return None
    return (f"note: the linear baseline leads on validation by {100 * gap:.1f} points, beyond the "
            f"{100 * noise:.1f}-point noise of {n:,} texts: on this data it is the stronger model so far. "
            "docs/accuracy.md lists the options that can lift the network"
            + ("" if "hybrid" in metrics else ", and --hybrid mixes the two")
            + "; the baseline's settings are in metrics.json under \"baseline\"")


if __name__ == "__main__":
    _background_main()
