"""The ``rnnkit`` command line: train, evaluate, predict, explain, serve, export, lab, datasets, demo.

Every user mistake ends as one line on stderr, ``error: <what> ; <fix>``, and
exit status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .config import EXPLAIN_MAX_STEPS as MAX_STEPS, EXPLAIN_STEPS as DEFAULT_STEPS
from .errors import RnnkitError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Recurrent text classifiers: train, evaluate, predict.\n\n"
         "Example: rnnkit train --dataset surnames --data-dir ../shared/data --out runs/surnames",
)


def _show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"rnnkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print rnnkit's version and exit."),
) -> None:
    """Recurrent text classifiers: train, evaluate, predict."""


DATASET_HELP = "Named dataset (words, surnames, names, nsmc) or a file/folder."
DATA_DIR_HELP = "Folder holding named datasets (else $RNNKIT_DATA_DIR, cache)."


# How a file is read: shared by train and baseline, so both read a file the same way.
LABEL_COLUMNS_OPTION = typer.Option(None, help="Multi-label: 0/1 columns that are labels, e.g. toxic,insult,threat.")
LABEL_SEP_OPTION = typer.Option(None, help="Multi-label: split label cells at this, e.g. '|' "
                                           "(detected when obvious; 'off' never splits).")
HEADER_OPTION = typer.Option(None, "--header/--no-header", help="Whether the file's first row is a header "
                                                                 "(sniffed when unset).")
DELIMITER_OPTION = typer.Option(None, help="Column separator: ',', ';', '|' or '\\t' (sniffed when unset).")


def _fail(exc: RnnkitError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


def _guard(fn):
    """Turn RnnkitError into the one-line message + exit 2 contract."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RnnkitError as exc:
            _fail(exc)
        except OSError as exc:
            if exc.filename is None:
                raise
            # A path the system refused (permissions, a file where a folder should be, a full disk):
            # the user's to fix, so one line rather than a traceback.
            _fail(RnnkitError(f"cannot use {exc.filename}: {exc.strerror}; check the path and its permissions"))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)

    return wrapper


def _precision_option():
    return typer.Option(None, help="Arithmetic of the predictions: as the run trained (the default; bf16 on a CPU "
                                   "with native bf16), or fp32 (what an ONNX export computes), bf16, auto.")


def _parse_sets(pairs: List[str]) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise RnnkitError(f"--set takes KEY=VALUE, got {pair!r}; e.g. --set head_dropout=0.4")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


@app.command(help="Train a classifier and save a run folder.\n\n"
                  "Examples:\n\n"
                  "  rnnkit train --dataset surnames --data-dir ../shared/data --out runs/surnames\n\n"
                  "  rnnkit train --dataset reviews.csv --text-column review --label-column stars --cell gru\n\n"
                  "  rnnkit train --resume runs/surnames\n\n"
                  "  torchrun --nproc-per-node 2 -m rnnkit train --dataset surnames --data-dir ../shared/data  "
                  "(DistributedDataParallel; --batch-size is the global batch)")
@_guard
def train(
    dataset: Optional[str] = typer.Option(None, help=DATASET_HELP),
    data_dir: Optional[str] = typer.Option(None, help=DATA_DIR_HELP),
    config: Optional[str] = typer.Option(None, help="TOML/YAML/JSON file of settings, or a named config "
                                                      "(notes-nsmc, book-surnames, nsmc-fast, nsmc-words, nsmc-chars); "
                                                      "flags override it."),
    out: Optional[str] = typer.Option(None, help="Run folder to create (default runs/<dataset>-<cell>-<time>)."),
    resume: Optional[str] = typer.Option(None, help="Continue the unfinished run in this folder."),
    cell: Optional[str] = typer.Option(None, help="rnn, lstm or gru."),
    backend: Optional[str] = typer.Option(None, help="torch (fused, fast) or scratch (rnnkit.nn, readable)."),
    pooling: Optional[str] = typer.Option(None, help="last, max, mean, maxmean or attention."),
    head: Optional[str] = typer.Option(None, help="softmax, or binary for two classes (one logit + sigmoid, BCE)."),
    bidirectional: Optional[bool] = typer.Option(None, "--bidirectional/--unidirectional"),
    num_layers: Optional[int] = typer.Option(None),
    embedding_dim: Optional[int] = typer.Option(None),
    hidden_size: Optional[int] = typer.Option(None),
    proj_size: Optional[int] = typer.Option(None, help="LSTM only: project the hidden state to this size "
                                                        "(smaller than --hidden-size; 0 = off)."),
    rnn_dropout: Optional[float] = typer.Option(None, help="Between stacked layers (needs --num-layers >= 2)."),
    embedding_dropout: Optional[float] = typer.Option(None),
    head_dropout: Optional[float] = typer.Option(None),
    tokenizer: Optional[str] = typer.Option(None, help="auto, char, whitespace, syllable, kiwi, okt, sentencepiece or wordpiece (with --set embeddings=minilm)."),
    pos_tags: Optional[bool] = typer.Option(None, "--pos-tags/--no-pos-tags", help="kiwi/okt: tokens as form/TAG."),
    min_freq: Optional[int] = typer.Option(None, help="Drop tokens seen fewer times in train."),
    max_len: Optional[int] = typer.Option(None, help="Cut documents to this many tokens."),
    text_column: Optional[str] = typer.Option(None, help="Column holding the text (guessed when unset)."),
    label_column: Optional[str] = typer.Option(None, help="Column holding the label (guessed when unset)."),
    label_columns: Optional[str] = LABEL_COLUMNS_OPTION,
    label_sep: Optional[str] = LABEL_SEP_OPTION,
    header: Optional[bool] = HEADER_OPTION,
    delimiter: Optional[str] = DELIMITER_OPTION,
    label_names: Optional[str] = typer.Option(None, help='JSON map of raw to shown labels, e.g. \'{"0":"neg","1":"pos"}\'.'),
    epochs: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None),
    optimizer: Optional[str] = typer.Option(None, help="adam, adamw, rmsprop or sgd."),
    lr: Optional[float] = typer.Option(None),
    weight_decay: Optional[float] = typer.Option(None),
    clip_grad: Optional[float] = typer.Option(None),
    early_stopping: Optional[int] = typer.Option(None, help="Patience in epochs."),
    monitor: Optional[str] = typer.Option(None, help="val_accuracy, val_macro_f1 or val_loss."),
    class_weights: Optional[bool] = typer.Option(None, "--class-weights/--no-class-weights"),
    label_smoothing: Optional[float] = typer.Option(None),
    seed: Optional[int] = typer.Option(None),
    device: Optional[str] = typer.Option(None, help="auto (GPU if visible), cpu, cuda or cuda:N."),
    amp: Optional[str] = typer.Option(None, help="Mixed precision on CUDA: off, bf16 or fp16 (measure first)."),
    precision: Optional[str] = typer.Option(None, help="CPU arithmetic: auto (bf16 where the CPU has it natively), "
                                                        "fp32 or bf16."),
    kernel: Optional[str] = typer.Option(None, help="Recurrent kernel: auto, fused, native or packed "
                                                     "(all equal; for speed comparisons)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
    baseline: Optional[bool] = typer.Option(None, "--baseline/--no-baseline",
                                            help="Fit the linear n-gram baseline too and report it beside the RNN "
                                                 "(default on; seconds)."),
    hybrid: Optional[bool] = typer.Option(None, "--hybrid/--no-hybrid",
                                          help="Also mix the RNN with the linear baseline, weighted on val; "
                                               "predict, evaluate and serve then use the mix (docs/accuracy.md)."),
    set_: List[str] = typer.Option([], "--set", help="Any other setting, KEY=VALUE (repeatable)."),
):
    from .config import resolve_config

    flags = {
        "dataset": dataset, "data_dir": data_dir, "out": out, "cell": cell, "backend": backend, "pooling": pooling, "head": head,
        "bidirectional": bidirectional, "num_layers": num_layers, "embedding_dim": embedding_dim,
        "hidden_size": hidden_size, "proj_size": proj_size, "rnn_dropout": rnn_dropout, "embedding_dropout": embedding_dropout,
        "head_dropout": head_dropout, "tokenizer": tokenizer, "pos_tags": pos_tags, "min_freq": min_freq,
        "max_len": max_len, "text_column": text_column, "label_column": label_column,
        "label_columns": label_columns, "label_sep": label_sep, "header": header, "delimiter": delimiter, "label_names": label_names, "epochs": epochs, "batch_size": batch_size,
        "optimizer": optimizer, "lr": lr, "weight_decay": weight_decay, "clip_grad": clip_grad,
        "early_stopping": early_stopping, "monitor": monitor, "class_weights": class_weights,
        "label_smoothing": label_smoothing, "seed": seed, "device": device, "amp": amp, "num_threads": threads,
        "progress": progress, "precision": precision, "kernel": kernel, "baseline": baseline,
        "hybrid": hybrid,
    }
    flags = {k: v for k, v in flags.items() if v is not None}
    flags.update(_parse_sets(set_))
    if resume:
        allowed = {"epochs", "device", "amp", "num_threads", "progress", "data_dir", "baseline"}
        extra = set(flags) - allowed
        if extra or config:
            raise RnnkitError(f"--resume continues a run with its saved config; only {', '.join(sorted(allowed))} "
                              f"may change (got {', '.join(sorted(extra)) or '--config'})")
        from .trainer import train as run_training

        run_training(resume=resume, **flags)
        return
    cfg = resolve_config(config, flags).validate()  # train() checks again; here a bad setting fails before torch loads
    if dataset is None and config is None:
        typer.echo(f"data: no --dataset given: training on the built-in '{cfg.dataset}' dataset "
                   "(rnnkit datasets lists the others; --dataset FILE trains on yours)", err=True)
    splits = None
    if os.environ.get("WORLD_SIZE", "1") == "1":  # under torchrun rank 0 reads first (a download happens once)
        from .data import load_config_splits

        # Before torch loads, so a missing file, a bad column or an empty file is said in 0.3 s, not 2 s.
        splits = load_config_splits(cfg)
    from .trainer import train as run_training

    run_training(cfg, splits=splits)


@app.command(help="Score a run on a labelled split or file.\n\n"
                  "Examples:\n\n"
                  "  rnnkit evaluate runs/surnames                      (its own test split)\n\n"
                  "  rnnkit evaluate runs/surnames --split val --json\n\n"
                  "  rnnkit evaluate runs/surnames --input more_names.csv")
@_guard
def evaluate(
    run_dir: Path = typer.Argument(..., help="A finished run folder."),
    dataset: Optional[str] = typer.Option(None, help="Named dataset or path (default: the run's own)."),
    data_dir: Optional[str] = typer.Option(None),
    split: str = typer.Option("test", help="train, val or test."),
    input: Optional[Path] = typer.Option(None, help="A labelled CSV/TSV/JSONL file to score instead."),
    text_column: Optional[str] = typer.Option(None),
    label_column: Optional[str] = typer.Option(None),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics object as JSON."),
    precision: Optional[str] = _precision_option(),
    cache_tokens: Optional[bool] = typer.Option(
        None, "--cache-tokens/--no-cache-tokens",
        help="Read and write the token cache when scoring 2,000 texts or more (default: as the run trained)."),
):
    from .data import DATASETS, PYTHON_DATA, load_config_splits, read_table
    from .predict import load

    run = load(run_dir, precision=precision)
    cfg = run.config
    if input is not None:
        table = read_table(input, text_column or cfg.text_column, label_column or cfg.label_column,
                           label_sep=cfg.label_sep, label_columns=cfg.label_columns)
        texts, labels, source = table.texts, table.labels, str(input)
    else:
        if (dataset or cfg.dataset) == PYTHON_DATA:
            raise RnnkitError("this run was trained on data passed from Python; score a labelled file with --input")
        given = {"dataset": dataset, "data_dir": data_dir, "text_column": text_column, "label_column": label_column}
        target = cfg.update({k: v for k, v in given.items() if v is not None})
        if target.dataset in DATASETS:  # a named dataset is read its own way, whatever file the run trained on
            target = target.update(dict.fromkeys(target.read_options()))
        splits = load_config_splits(target, progress=False)
        part = splits[split]
        if len(part) == 0:
            raise RnnkitError(f"the {split} split of {dataset or cfg.dataset} is empty; choose another --split")
        texts, labels, source = part.texts, part.labels, f"the {split} split"
    report = run.evaluate(texts, labels, source=source, cache_tokens=cache_tokens)
    # The baseline was scored when the run trained, on this same split: shown only for that split.
    stored = (run.metrics.get("baseline") or {}).get(split) if input is None and dataset in (None, cfg.dataset) \
        else None
    if run.hybrid is not None:
        report["hybrid"] = {"weight": run.hybrid.weight}
    if as_json:
        if stored:
            report["baseline"] = {**stored, "settings": run.metrics["baseline"]["settings"]}
        typer.echo(json.dumps(report, ensure_ascii=False))
        return
    typer.echo(f"{source}: {report['n']} examples  accuracy {report['accuracy']:.4f}  "
               f"macro-F1 {report['macro_f1']:.4f}  weighted-F1 {report['weighted_f1']:.4f}")
    if run.hybrid is not None:
        alone = report["rnn_alone"]
        typer.echo(f"(the run's hybrid: RNN weight {run.hybrid.weight:.2f} + linear baseline, as predict and serve "
                   f"use it; the RNN alone: accuracy {alone['accuracy']:.4f}  macro-F1 {alone['macro_f1']:.4f})")
        if input is None and split == "train":
            typer.echo("note: the hybrid's linear model was fitted on this train split, so its accuracy here "
                       "flatters it; val and test are the fair splits", err=True)
    if stored:
        from .baseline import compare_line

        typer.echo(compare_line(split, {split: report}, {split: stored}) + "  [linear baseline: "
                   f"{run.metrics['baseline']['settings']['features']} n-grams, fitted when the run trained]")
    width = max(len(l) for l in report["per_class"]) + 2
    typer.echo(f"{'class':<{width}} precision  recall     f1  support")
    for label, row in report["per_class"].items():
        typer.echo(f"{label:<{width}} {row['precision']:9.3f} {row['recall']:7.3f} {row['f1']:6.3f} {row['support']:8d}")
    if "risk_coverage" in report:
        typer.echo(f"\ncalibration error (ECE, 15 bins) {report['ece']:.4f}; abstaining below a probability "
                   "(predict/serve --abstain-below P):")
        typer.echo("abstain below  coverage  accuracy  answered")
        for row in report["risk_coverage"]:
            acc = f"{row['accuracy']:8.4f}" if row["accuracy"] is not None else "       -"
            typer.echo(f"{row['threshold']:13.2f}  {row['coverage']:8.1%}  {acc}  {row['answered']:8d}")


@app.command(help="Fit the linear n-gram baseline (TF-IDF + linear SVM) on a dataset's splits, tuned on val, "
                  "scored on test: the bar an RNN has to clear.\n\n"
                  "Examples:\n\n"
                  "  rnnkit baseline --dataset surnames --data-dir ../shared/data\n\n"
                  "  rnnkit baseline --dataset reviews.csv --text-column review --label-column stars --json")
@_guard
def baseline(
    dataset: Optional[str] = typer.Option(None, help=DATASET_HELP),
    data_dir: Optional[str] = typer.Option(None, help=DATA_DIR_HELP),
    config: Optional[str] = typer.Option(None, help="Settings file or named config: its split and text settings "
                                                      "(seed, fractions, normalization) are used."),
    text_column: Optional[str] = typer.Option(None),
    label_column: Optional[str] = typer.Option(None),
    label_columns: Optional[str] = LABEL_COLUMNS_OPTION,
    label_sep: Optional[str] = LABEL_SEP_OPTION,
    header: Optional[bool] = HEADER_OPTION,
    delimiter: Optional[str] = DELIMITER_OPTION,
    seed: Optional[int] = typer.Option(None, help="Seed of the split, when the data has none (same as train's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result object as JSON."),
    set_: List[str] = typer.Option([], "--set", help="Any other setting, KEY=VALUE (repeatable)."),
):
    from .baseline import fit_baseline
    from .config import resolve_config
    from .data import load_config_splits
    from .tokenizers import Tokenizer
    from .trainer import tokenizer_settings

    flags = {"dataset": dataset, "data_dir": data_dir, "text_column": text_column, "label_column": label_column,
             "label_columns": label_columns, "label_sep": label_sep, "header": header, "delimiter": delimiter,
             "seed": seed}
    flags = {k: v for k, v in flags.items() if v is not None}
    flags.update(_parse_sets(set_))
    cfg = resolve_config(config, flags)
    splits = load_config_splits(cfg)
    settings = tokenizer_settings(cfg)
    # Only the normalization is needed (n-grams need no tokenizer); the base class applies it.
    normalize = Tokenizer(settings["lowercase"], settings["normalize"], settings["squeeze_repeats"])
    result = fit_baseline(splits, prepare=normalize.prepare, log=lambda m: None)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    typer.echo(f"{splits.name or cfg.dataset}: train {len(splits.train)}, val {len(splits.val)}, "
               f"test {len(splits.test)}")
    typer.echo("features                    C  val accuracy")
    for row in result["tried"]:
        chosen = "  <- chosen" if (row["features"], row["C"]) == (result["settings"]["features"],
                                                                  result["settings"]["C"]) else ""
        typer.echo(f"{row['features']:<24} {row['C']:>4}  {row['val_accuracy']:.4f}{chosen}")
    for split in ("val", "test"):
        if split in result:
            typer.echo(f"{split}: accuracy {result[split]['accuracy']:.4f}  macro-F1 {result[split]['macro_f1']:.4f}")
    typer.echo(f"{result['seconds']:.1f}s")


@app.command(help="Predict labels for texts or a file of texts.\n\n"
                  "Examples:\n\n"
                  "  rnnkit predict runs/surnames Nakamura Schmidt --top-k 3\n\n"
                  "  rnnkit predict runs/surnames --input names.txt --output predictions.jsonl")
@_guard
def predict(
    run_dir: Path = typer.Argument(..., help="A finished run folder."),
    texts: Optional[List[str]] = typer.Argument(None, help="Texts to classify."),
    top_k: int = typer.Option(1, "--top-k", "-k", help="How many labels to show per text."),
    input: Optional[Path] = typer.Option(None, help="File of texts: .txt (one per line), CSV/TSV/JSONL, or no extension (sniffed; the log says how it was read)."),
    output: Optional[Path] = typer.Option(None, help="Write predictions to .jsonl, .json or .csv (default: stdout)."),
    text_column: Optional[str] = typer.Option(None),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
    abstain_below: Optional[float] = typer.Option(
        None, help="Label a text 'uncertain' when its top (calibrated) probability is below this, e.g. 0.8; "
                   "see the risk-coverage table of rnnkit evaluate."),
    precision: Optional[str] = _precision_option(),
):
    from .predict import load

    _require_texts(texts, input, "predict", "classify")
    if output is not None and output.suffix.lower() not in (".jsonl", ".json", ".csv"):
        raise RnnkitError(f"--output must end in .jsonl, .json or .csv; got {output}")
    run = load(run_dir, precision=precision)
    if input is not None:
        texts = _read_input_texts(input, text_column or run.config.text_column, text_column is not None)
    preds = run.predict(texts, top_k=top_k, abstain_below=abstain_below)
    rows = [{"text": t, **p.to_dict()} for t, p in zip(texts, preds)]
    if output is not None:
        _write_predictions(output, rows)
        typer.echo(f"wrote {len(rows)} predictions to {output}", err=True)
    elif as_json:
        for row in rows:
            typer.echo(json.dumps(row, ensure_ascii=False))
    else:
        for row in rows:
            alts = "  ".join(f"{t['label']} {t['probability']:.3f}" for t in row["top"])
            if "labels" in row:  # multi-label: the labels past their thresholds, then the top-k
                chosen = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in row["labels"]) or "(none)"
                alts = f"labels: {chosen}\ttop: {alts}"
            if row["label"] != row["top"][0]["label"]:  # abstained: below --abstain-below
                alts = f"{row['label']}\t{alts}"
            typer.echo(f"{row['text']}\t{alts}")


def _require_texts(texts: Optional[List[str]], input: Optional[Path], command: str, verb: str) -> None:
    """Texts come either as arguments or from --input: exactly one of the two."""
    if input is None and not texts:
        raise RnnkitError(f"give texts to {verb} or --input FILE; e.g. rnnkit {command} RUN_DIR Nakamura")
    if input is not None and texts:
        raise RnnkitError("give either texts or --input FILE, not both")


def _read_input_texts(path: Path, text_column: Optional[str], explicit_column: bool = False) -> list[str]:
    """The texts of an --input file; what was decided about its format goes to stderr.

    ``.txt`` is one text per line, as the help says, unless ``--text-column`` names a column. A
    table extension (CSV, TSV, JSONL, Parquet) is read as a table. A name without either is sniffed:
    JSON lines, or a delimiter that splits every line alike, make a table, and the log says so.
    """
    from .data import read_table, read_text_file, sniff_delimiter

    known = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".json", ".parquet", ".pq", ".gz")
    suffix = path.suffix.lower()
    if suffix not in known and not explicit_column:
        content = read_text_file(path)
        table = suffix != ".txt" and (content.lstrip().startswith("{") or sniff_delimiter(content) is not None)
        if not table:
            lines = [line.strip() for line in content.splitlines()]
            texts = [line for line in lines if line]
            if len(texts) < len(lines):
                typer.echo(f"input: {path.name}: one text per line; skipped {len(lines) - len(texts)} blank lines",
                           err=True)
            return texts
    read = read_table(path, text_column, require_labels=False)
    for note in read.notes:
        typer.echo(f"input: {note}", err=True)
    if suffix not in known:
        typer.echo(f"input: read {path.name} as a table; name it .txt to read one text per line", err=True)
    return read.texts


def _write_predictions(path: Path, rows: list[dict]) -> None:
    import csv
    import io

    from .run import atomic_write_bytes

    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif suffix == ".json":
        data = json.dumps(rows, ensure_ascii=False, indent=1)
    else:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["text", "label", "probability", "top"])
        for r in rows:
            writer.writerow([r["text"], r["label"], f"{r['probability']:.6f}",
                             ";".join(f"{t['label']}:{t['probability']:.4f}" for t in r["top"])])
        data = buf.getvalue()
    if not path.parent.is_dir():
        problem = "is a file" if path.parent.exists() else "does not exist"
        raise RnnkitError(f"folder {path.parent} {problem}; create it or choose another --output")
    if path.is_dir():
        raise RnnkitError(f"--output {path} is a folder; give a file name ending in .jsonl, .json or .csv")
    atomic_write_bytes(path, data.encode("utf-8"))


@app.command(help="Show which tokens drove a prediction: one score per token, as the run's tokenizer split "
                  "the text. Green (positive) pushed toward the explained label, red away from it.\n\n"
                  "Examples:\n\n"
                  "  rnnkit explain runs/surnames Nakamura Schmidt\n\n"
                  "  rnnkit explain runs/nsmc \"연기는 좋은데 스토리가 지루하다\" --json\n\n"
                  "  rnnkit explain runs/surnames Schmidt --target Dutch --method occlusion")
@_guard
def explain(
    run_dir: Path = typer.Argument(..., help="A finished run folder."),
    texts: Optional[List[str]] = typer.Argument(None, help="Texts to explain."),
    method: str = typer.Option("ig", help="ig (Integrated Gradients on the embeddings) or occlusion "
                                          "(delete one token at a time)."),
    target: Optional[str] = typer.Option(None, help="Explain this label instead of the predicted one."),
    input: Optional[Path] = typer.Option(None, help="File of texts: .txt (one per line), CSV/TSV/JSONL, or no extension (sniffed; the log says how it was read)."),
    text_column: Optional[str] = typer.Option(None),
    steps: int = typer.Option(DEFAULT_STEPS, min=2, max=MAX_STEPS, help="IG: points on the path to start from; the path is "
                                                       "refined where the scores miss P(text) - P(baseline) by "
                                                       "over 0.02."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per text."),
):
    from .explain import render
    from .predict import load

    _require_texts(texts, input, "explain", "explain")
    run = load(run_dir)  # explanations compute in fp32 whatever the run predicts in (rnnkit.explain)
    if run.hybrid is not None:
        typer.echo("note: this explains the RNN alone; the run's predictions mix it with the linear baseline "
                   f"(--hybrid, RNN weight {run.hybrid.weight:.2f}), so a label or probability here can differ "
                   "from rnnkit predict's", err=True)
    if input is not None:
        texts = _read_input_texts(input, text_column or run.config.text_column, text_column is not None)
    explanations = run.explain(texts, method=method, target=target, steps=steps)
    if as_json:
        for e in explanations:
            typer.echo(json.dumps(e.to_dict(), ensure_ascii=False))
        return
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True, markup=False)
    for e in explanations:
        head = f"{e.label} {e.probability:.3f}"
        if e.target != e.label:
            head += f"  (explaining {e.target} {e.target_probability:.3f})"
        console.print(f"{head}  [{e.method}]")
        console.print(render(e, run.vectorizer.tokenizer.name))
        ranked = sorted(e.tokens, key=lambda ts: -abs(ts[1]))[:5]
        console.print("  strongest: " + ", ".join(f"{t} {s:+.3f}" for t, s in ranked)
                      + (f"  ({e.truncated} tokens past max_len not read)" if e.truncated else ""))


@app.command(help="List the named datasets, their sizes and where each was found.\n\n"
                  "Example: rnnkit datasets --data-dir ../shared/data")
@_guard
def datasets(data_dir: Optional[str] = typer.Option(None, help="Folder holding datasets.")):
    from .data import describe_datasets

    rows = describe_datasets(data_dir)
    for row in rows:
        size = f"{row['size_bytes'] / 1e6:7.1f} MB" if row["size_bytes"] else "       -  "
        typer.echo(f"{row['name']:<9} {size}  {row['found']}\n{'':<9} {row['description']}")


@app.command(help="Train on the built-in 'words' dataset (offline, 25-66 s on 2 CPU cores) and show predictions.\n\n"
                  "Example: rnnkit demo --out runs/demo")
@_guard
def demo(
    out: Optional[str] = typer.Option(None, help="Run folder (default runs/demo-<time>)."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (default: the words dataset's)."),
    seed: int = typer.Option(0),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    import time

    from .config import Config
    from .trainer import train as run_training

    cfg = Config.for_dataset("words", seed=seed, progress=progress, early_stopping=3,
                             out=out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}",
                             **({"epochs": epochs} if epochs is not None else {}))
    started = time.perf_counter()
    run = run_training(cfg)
    typer.echo(f"\nwords dataset: val accuracy {run.metrics['val']['accuracy']:.3f}, "
               f"test accuracy {run.metrics['test']['accuracy']:.3f}, "
               f"test macro-F1 {run.metrics['test']['macro_f1']:.3f}  ({time.perf_counter() - started:.0f} s)")
    samples = ["weather", "wetter", "meteo", "tiempo", "pogoda", "počasí", "hava", "weerbericht", "tempo", "météo"]
    typer.echo("\nPredictions (word -> top 2 languages):")
    for word, pred in zip(samples, run.predict(samples, top_k=2)):
        typer.echo(f"  {word:<12} " + ", ".join(f"{l} {p:.2f}" for l, p in pred.top))
    typer.echo(f"\nRun saved in {run.path}. Try: rnnkit predict {run.path} bonjour --top-k 3")


@app.command(help="Serve a run over HTTP: JSON API at /predict, a web page at /, API docs at /docs.\n\n"
                  "Example: rnnkit serve runs/surnames --port 8000\n\n"
                  "  curl -s localhost:8000/predict -H 'content-type: application/json' "
                  "-d '{\"texts\": [\"Nakamura\"], \"top_k\": 3}'")
@_guard
def serve(
    run_dir: Path = typer.Argument(..., help="A finished run folder."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 exposes the server to your network."),
    port: int = typer.Option(8000, min=1, max=65535),
    max_texts: int = typer.Option(256, min=1, help="Texts per request; more gets 413."),
    max_chars: int = typer.Option(2000, min=1, help="Characters per text; more gets 413."),
    max_explain_tokens: int = typer.Option(1000, min=1, help="Tokens one /explain request may hold; more gets 413."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads for the model (default: torch's)."),
    abstain_below: Optional[float] = typer.Option(
        None, help="Label a text 'uncertain' when its top (calibrated) probability is below this, e.g. 0.8 "
                   "(a request may set its own abstain_below)."),
    precision: Optional[str] = _precision_option(),
):
    from .serve import Limits, serve as run_server

    if threads:
        import torch

        torch.set_num_threads(threads)
    run_server(str(run_dir), host, port,
               Limits(max_texts=max_texts, max_chars=max_chars, max_explain_tokens=max_explain_tokens),
               abstain_below=abstain_below, precision=precision)


@app.command(help="Export a run as ONNX (verified with onnxruntime) or TorchScript, with its vectorizer.\n\n"
                  "Example: rnnkit export runs/surnames --format onnx --out exports/surnames")
@_guard
def export(
    run_dir: Path = typer.Argument(..., help="A finished run folder."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),
    out: Optional[Path] = typer.Option(None, help="Folder to create (default <run_dir>-<format>)."),
):
    from .export import export_run

    run_dir = run_dir.resolve()
    out = out or run_dir.with_name(f"{run_dir.name}-{format}")
    info = export_run(run_dir, out, format)
    typer.echo(f"exported {out / info['file']} ({format}); largest difference from PyTorch on random "
               f"mixed-length batches: {info['max_abs_difference_vs_pytorch']:.1e}")
    if info["hybrid_not_exported"]:
        typer.echo("note: the export holds the RNN alone; this run's hybrid (the RNN mixed with its linear "
                   "baseline) predicts only through rnnkit predict/evaluate/serve", err=True)


lab_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Seeded experiments that show what RNNs do: shapes, vanishing gradients, memory, dropout, explanations.\n\n"
         "Each writes <out>/<name>.json and PNG plots; `rnnkit lab report <out>` gathers them.\n\n"
         "Example: rnnkit lab memory --quick --out lab && rnnkit lab report lab",
)
app.add_typer(lab_app, name="lab")


def _lab_command(name: str, summary: str):
    @_guard
    def command(
        out: Path = typer.Option(Path("lab"), help="Folder for the JSON results and plots."),
        quick: bool = typer.Option(False, "--quick", help="Small sizes: seconds instead of minutes."),
        seed: int = typer.Option(0),
        data_dir: Optional[str] = typer.Option(None, help="Folder holding NSMC (lab explain, full mode)."),
    ):
        from .lab import run_experiment

        result = run_experiment(name, out, quick=quick, seed=seed, log=lambda m: typer.echo(m, err=True),
                                data_dir=data_dir)
        for finding in result.get("findings", []):
            typer.echo(f"- {finding}")

    command.__name__ = name
    lab_app.command(name=name, help=f"{summary}.\n\nExample: rnnkit lab {name} --quick --out lab")(command)


def _register_lab() -> None:
    from .lab import EXPERIMENTS

    for name, summary in EXPERIMENTS.items():
        _lab_command(name, summary)


_register_lab()


@lab_app.command(name="all", help="Run every lab experiment, then write the report.\n\n"
                                  "Example: rnnkit lab all --quick --out lab")
@_guard
def lab_all(
    out: Path = typer.Option(Path("lab"), help="Folder for the JSON results and plots."),
    quick: bool = typer.Option(False, "--quick", help="Small sizes: seconds instead of minutes."),
    seed: int = typer.Option(0),
    data_dir: Optional[str] = typer.Option(None, help="Folder holding NSMC (lab explain, full mode)."),
):
    from .lab import EXPERIMENTS, run_experiment
    from .lab.report import build_report

    for name in EXPERIMENTS:
        run_experiment(name, out, quick=quick, seed=seed, log=lambda m: typer.echo(m, err=True), data_dir=data_dir)
    typer.echo(f"report: {build_report(out)}")


@lab_app.command(name="report", help="Gather the lab results in a folder into report.md.\n\n"
                                     "Example: rnnkit lab report lab")
@_guard
def lab_report(folder: Path = typer.Argument(Path("lab"), help="Folder the experiments wrote into.")):
    from .lab.report import build_report

    typer.echo(f"report: {build_report(folder)}")


def main() -> None:
    try:
        app()
    except RnnkitError as exc:  # raised outside a command (argument parsing callbacks)
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    finally:
        # The interpreter's shutdown collections walk every object torch and friends made: 0.61-0.93 s
        # of every command's exit, 0.17-0.24 s with them frozen. Only the shutdown itself comes after this.
        gc.freeze()


if __name__ == "__main__":
    main()
