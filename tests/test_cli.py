"""The command line as users run it: real processes, exit codes, one-line errors."""

import json
import subprocess
import sys

import pytest

from conftest import make_rows


def rnnkit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rnnkit", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=240)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    data = tmp / "toy.tsv"
    data.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in make_rows()))
    cfg = tmp / "cfg.toml"
    cfg.write_text("embedding_dim = 16\nhidden_size = 16\nhead_hidden = 16\nlr = 0.01\n")
    out = tmp / "run"
    res = rnnkit("train", "--dataset", data, "--config", cfg, "--out", out, "--epochs", 3, "--cell", "gru",
                 "--no-progress", "--threads", 1)
    assert res.returncode == 0, res.stderr
    assert "test accuracy" in res.stderr and "linear baseline" in res.stderr
    return tmp, out


def test_help_shows_examples():
    for cmd in ("train", "evaluate", "predict", "datasets", "demo"):
        res = rnnkit(cmd, "--help")
        assert res.returncode == 0 and "Example" in res.stdout, cmd


def test_version():
    import rnnkit as package

    res = rnnkit("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"rnnkit {package.__version__}"


def test_config_file_and_flags_both_apply(cli_run):
    _, out = cli_run
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["cell"], cfg["hidden_size"], cfg["epochs"]) == ("gru", 16, 3)


def test_predict_text_and_json(cli_run):
    _, out = cli_run
    res = rnnkit("predict", out, "abcdefg", "hijklmn", "--top-k", 2, "--json")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(l) for l in res.stdout.splitlines()]
    assert [r["label"] for r in rows] == ["alpha", "beta"] and len(rows[0]["top"]) == 2
    plain = rnnkit("predict", out, "opqrstu")
    assert plain.stdout.startswith("opqrstu\tgamma ")


def test_predict_file_to_file(cli_run):
    tmp, out = cli_run
    src = tmp / "in.txt"
    src.write_text("abcdefg\n\nhijklmn\n")
    dest = tmp / "preds.jsonl"
    res = rnnkit("predict", out, "--input", src, "--output", dest)
    assert res.returncode == 0, res.stderr
    assert [json.loads(l)["label"] for l in dest.read_text().splitlines()] == ["alpha", "beta"]
    csv_dest = tmp / "preds.csv"
    assert rnnkit("predict", out, "--input", src, "--output", csv_dest).returncode == 0
    assert csv_dest.read_text().splitlines()[0] == "text,label,probability,top"


def test_evaluate_json_and_file(cli_run):
    tmp, out = cli_run
    res = rnnkit("evaluate", out, "--json")
    assert res.returncode == 0, res.stderr
    metrics = json.loads(res.stdout)
    saved = json.loads((out / "metrics.json").read_text())["test"]
    assert metrics["accuracy"] == pytest.approx(saved["accuracy"]) and "macro_f1" in metrics
    assert metrics["baseline"]["accuracy"] == json.loads((out / "metrics.json").read_text())["baseline"]["test"]["accuracy"]
    res = rnnkit("evaluate", out)
    assert "linear baseline" in res.stdout and "points" in res.stdout
    f = tmp / "more.csv"
    f.write_text("text,label\nabcabc,alpha\nhijhij,beta\n")
    res = rnnkit("evaluate", out, "--input", f)
    assert res.returncode == 0 and "accuracy 1.0000" in res.stdout


def one_line_error(res, *fragments):
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


def test_errors_are_one_line_with_exit_2(cli_run, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    tmp, out = cli_run
    bad = tmp_path / "bad.csv"
    bad.write_bytes("text,label\nB\xe9la,a\n".encode("latin-1"))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    labels = tmp_path / "labels.csv"
    labels.write_text("text,label\nabc,alpha\nxyz,zeta\n")
    dest = tmp_path / "x.jsonl"
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    swapped = tmp_path / "reviews.csv"  # every 'label' distinct: the columns were named the wrong way round
    swapped.write_text("review,sentiment\n" + "".join(f"pos,review number {i}\n" for i in range(40)))
    stopped = tmp_path / "stopped"  # what a run interrupted before its first epoch leaves behind
    stopped.mkdir()
    for name in ("config.json", "vectorizer.json"):
        (stopped / name).write_bytes((out / name).read_bytes())
    (stopped / "history.jsonl").write_text("")
    cases = [
        (("train", "--dataset", tmp_path / "nope.csv", "--out", tmp_path / "o"), ("not found",)),
        (("train", "--dataset", bad, "--out", tmp_path / "o"), ("not valid UTF-8",)),
        (("train", "--dataset", empty, "--out", tmp_path / "o"), ("is empty",)),
        (("train", "--dataset", tmp / "toy.tsv", "--text-column", "review", "--out", tmp_path / "o"),
         ("no column 'review'",)),
        (("train", "--dataset", tmp / "toy.tsv", "--lr", "-3", "--out", tmp_path / "o"), ("lr must be",)),
        (("train", "--dataset", tmp / "toy.tsv", "--set", "epoch=3"), ("did you mean 'epochs'",)),
        (("train", "--dataset", tmp / "toy.tsv", "--cell", "gru", "--proj-size", "4", "--out", tmp_path / "o"),
         ("proj_size works with cell=lstm only",)),
        (("evaluate", out, "--input", labels), ("label 'zeta'", "not seen in training")),
        (("predict", out, ""), ("empty",)),
        (("predict", tmp_path / "missing-run", "abc"), ("run folder not found",)),
        (("predict", out, "--input", empty, "--output", dest), ("is empty",)),
        (("train", "--dataset", tmp / "toy.tsv", "--out", a_file), ("--out", "is a file")),
        (("train", "--dataset", tmp / "toy.tsv", "--out", a_file / "run"), ("cannot create --out", "is a file")),
        (("train", "--dataset", tmp / "toy.tsv", "--out", stopped), ("before its first epoch", "rm -r")),
        (("train", "--resume", stopped), ("no checkpoint", "rm -r")),
        (("predict", out, "abc", "--output", a_file / "p.jsonl"), ("is a file",)),
    ]
    # Each case is a whole process (the exit code is part of the contract); they are independent,
    # so they run side by side instead of paying ~2 s of start-up one after another.
    # After the data's own log lines (what was sniffed), the error names the likely cause.
    logged = [(("train", "--dataset", swapped, "--out", tmp_path / "o"), ("40 distinct labels", "--text-column"))]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: rnnkit(*case[0]), cases + logged))
    for (args, fragments), res in zip(cases, results):
        one_line_error(res, *fragments)
    for (args, fragments), res in zip(logged, results[len(cases):]):
        last = res.stderr.strip().splitlines()[-1]
        assert res.returncode == 2 and last.startswith("error: ") and "Traceback" not in res.stderr, res.stderr
        assert all(frag in last for frag in fragments), last
    assert not (tmp_path / "o").exists()
    assert not dest.exists()


def test_predict_input_txt_is_one_text_per_line_and_sniffed_tables_are_announced(cli_run, tmp_path):
    _, out = cli_run
    txt = tmp_path / "texts.txt"  # a tab, a comma and a JSON-looking line: still one text per line
    txt.write_text('abc\tdef\n{"a": 1} hijk\n\nopq, rst\n')
    res = rnnkit("predict", out, "--input", txt, "--json")
    assert res.returncode == 0, res.stderr
    assert [json.loads(l)["text"] for l in res.stdout.splitlines()] == ["abc\tdef", '{"a": 1} hijk', "opq, rst"]
    assert "skipped 1 blank lines" in res.stderr
    table = tmp_path / "texts"  # no extension, comma-separated with a header: a table, and the log says so
    table.write_text("name,group\nabcdefg,x\nhijklmn,y\n")
    res = rnnkit("predict", out, "--input", table, "--json")
    assert res.returncode == 0, res.stderr
    assert [json.loads(l)["text"] for l in res.stdout.splitlines()] == ["abcdefg", "hijklmn"]
    assert "read texts as a table" in res.stderr


def test_run_files_are_readable_as_the_umask_allows(cli_run):
    import os
    import stat

    _, out = cli_run
    mask = os.umask(0)
    os.umask(mask)
    for path in out.iterdir():
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path.name


def test_datasets_lists_all(tmp_path):
    res = rnnkit("datasets", "--data-dir", tmp_path)
    assert res.returncode == 0
    for name in ("words", "surnames", "names", "nsmc"):
        assert name in res.stdout


def test_import_is_light():
    code = "import sys, rnnkit; assert 'torch' not in sys.modules, 'torch imported'; print(rnnkit.Config().cell)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_demo_runs_offline(tmp_path, monkeypatch):
    env_cmd = [sys.executable, "-m", "rnnkit", "demo", "--epochs", "1", "--out", str(tmp_path / "demo"),
               "--no-progress"]
    import os

    env = {**os.environ, "RNNKIT_OFFLINE": "1", "RNNKIT_DATA_DIR": str(tmp_path / "none")}
    res = subprocess.run(env_cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "test accuracy" in res.stdout and "Predictions" in res.stdout
    assert (tmp_path / "demo" / "run.json").exists()
    # the demo trains with the words dataset's own defaults (the slanted triangular schedule)
    saved = json.loads((tmp_path / "demo" / "config.json").read_text())
    assert saved["scheduler"] == "linear" and saved["tokenizer"] == "char"


def test_train_lstm_with_projections_from_the_command_line(tmp_path):
    data = tmp_path / "toy.tsv"
    data.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in make_rows(40)))
    out = tmp_path / "run"
    res = rnnkit("train", "--dataset", data, "--out", out, "--epochs", 1, "--cell", "lstm", "--hidden-size", 16,
                 "--proj-size", 4, "--embedding-dim", 8, "--no-baseline", "--no-progress", "--threads", 1)
    assert res.returncode == 0, res.stderr
    assert "projected to 4" in res.stderr
    assert json.loads((out / "config.json").read_text())["proj_size"] == 4


def test_main_freezes_the_heap_before_the_interpreter_exits(monkeypatch):
    """The interpreter's shutdown collections over torch's objects cost 0.6-0.9 s per command; frozen, 0.2 s."""
    import gc

    from rnnkit import cli

    monkeypatch.setattr(sys, "argv", ["rnnkit", "--help"])
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main()
        assert exited.value.code == 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_cli_module_imports_no_torch():
    """`rnnkit --help` and the one-line errors should not wait 1-3 s for torch."""
    code = "import sys, rnnkit.cli; bad = [m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_a_bad_setting_fails_before_torch_loads():
    """An absurd hyper-parameter is a one-line error at once, not after 2 s of importing torch."""
    code = ("import sys\nsys.argv = ['rnnkit', 'train', '--dataset', 'surnames', '--lr', '-1']\n"
            "from rnnkit import cli\ntry:\n    cli.main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print(code, 'torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.stdout.split() == ["2", "False"], run.stdout + run.stderr
    assert run.stderr.strip().count("\n") == 0 and "lr" in run.stderr


def test_a_bad_data_file_fails_before_torch_loads(tmp_path):
    """The data is read before the trainer (and torch) is imported: a missing or empty file is said at once."""
    header_only = tmp_path / "empty.csv"
    header_only.write_text("text,label\n", encoding="utf-8")
    for path, message in ((tmp_path / "missing.csv", "dataset path not found"), (header_only, "no rows")):
        code = (f"import sys\nsys.argv = ['rnnkit', 'train', '--dataset', {str(path)!r}]\n"
                "from rnnkit import cli\ntry:\n    cli.main()\nexcept SystemExit as e:\n    code = e.code\n"
                "print(code, 'torch' in sys.modules)")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
        assert run.stdout.split() == ["2", "False"], run.stdout + run.stderr
        assert run.stderr.strip().count("\n") == 0 and message in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.csv"]  # no run folder was started
