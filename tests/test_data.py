import gzip
import hashlib
import json
import zipfile

import pytest

from rnnkit import data
from rnnkit.data import (Remote, download, ensure_dataset, load_dataset, load_path, read_label_folder, read_table,
                         sniff_header, splits_from_table, stratified_split, table_from_data)
from rnnkit.errors import RnnkitError


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


# --- readers -----------------------------------------------------------------

def test_csv_with_split_column_keeps_the_given_split(tmp_path):
    p = write(tmp_path / "s.csv", "nationality,split,surname\nA,train,x\nB,val,y\nA,test,z\nB,train,w\n")
    splits = load_path(p)
    assert splits.sizes() == {"train": 2, "val": 1, "test": 1}
    assert splits.test.texts == ["z"] and splits.train.labels == ["A", "B"]


def test_tsv_skips_empty_documents_with_a_count(tmp_path):
    # NSMC's original files have a few rows whose document is empty.
    p = write(tmp_path / "r.txt", 'id\tdocument\tlabel\n1\t좋아요 "최고\t1\n2\t\t0\n3\t별로\t0\n')
    table = read_table(p)
    assert table.texts == ['좋아요 "최고', "별로"] and table.labels == ["1", "0"]
    assert table.skipped_empty == 1


def test_jsonl_and_explicit_columns(tmp_path):
    p = write(tmp_path / "d.jsonl", '{"t": "a", "y": "1"}\n\n{"t": "b", "y": "2"}\n')
    table = read_table(p, "t", "y")
    assert table.texts == ["a", "b"] and table.labels == ["1", "2"]


def test_gzipped_tsv(tmp_path):
    p = tmp_path / "r.tsv.gz"
    p.write_bytes(gzip.compress("text\tlabel\nhi\tx\n".encode()))
    assert read_table(p).texts == ["hi"]


@pytest.mark.parametrize("content,match", [
    ("", "is empty"),
    ("text,label\n", "no rows"),
    ("id,stars,score,review\n1,5,2,great fun\n2,1,1,dull\n3,5,2,ok\n",
     "cannot tell which column.*holds the label.*stars \\(2 values\\), score \\(2 values\\).*--label-column"),
    ("text,label\nhi,\n", "row 2 has an empty 'label'"),
    ("text,label,split\nhi,a,holdout\n", "split 'holdout'"),
])
def test_bad_files_get_one_line_errors(tmp_path, content, match):
    p = write(tmp_path / "bad.csv", content)
    with pytest.raises(RnnkitError, match=match) as err:
        read_table(p)
    assert "\n" not in str(err.value)


def test_missing_file_column_and_bad_encoding(tmp_path):
    with pytest.raises(RnnkitError, match="file not found"):
        read_table(tmp_path / "nope.csv")
    p = write(tmp_path / "a.csv", "text,label\nhi,a\n")
    with pytest.raises(RnnkitError, match="no column 'review'.*columns: text, label"):
        read_table(p, text_column="review")
    latin = write(tmp_path / "l.csv", "text,label\nBéla,a\n", encoding="latin-1")
    with pytest.raises(RnnkitError, match="not valid UTF-8.*re-save it as UTF-8"):
        read_table(latin)
    with pytest.raises(RnnkitError, match="spreadsheet; save it as CSV"):
        read_table(write(tmp_path / "a.xlsx", "x"))
    with pytest.raises(RnnkitError, match="not valid JSON"):
        read_table(write(tmp_path / "b.jsonl", '{"text": "a", "label": 1}\n{oops\n'))


# --- own files: sniffed format, header and columns ---------------------------------

SMS = "ham\tsee you at 6\nspam\tWIN a prize, call now\nham\tok lor\nham\ton my way\nspam\tFREE entry, text WIN\n"


def test_raw_sms_file_without_extension_or_header(tmp_path):
    # The SMS spam collection as downloaded: label<TAB>text, no header, no extension.
    table = read_table(write(tmp_path / "SMSSpamCollection", SMS))
    assert table.texts[0] == "see you at 6" and table.labels == ["ham", "spam", "ham", "ham", "spam"]
    notes = " ".join(table.notes)
    assert "tab-separated (sniffed)" in notes and "no header" in notes and "'ham' is also a value" in notes
    assert "label = col1" in notes and "text = col2" in notes and "--header/--no-header" in notes


def test_header_is_told_or_sniffed(tmp_path):
    p = write(tmp_path / "d.tsv", "kind\tmessage body\n" + SMS)
    assert read_table(p).texts[0] == "see you at 6"  # short distinct names: a header
    assert read_table(p, header=False).texts[0] == "message body"
    numbered = write(tmp_path / "n.tsv", "1\tfine film\n0\tboring\n1\tgreat\n0\tbad\n")
    assert read_table(numbered).labels == ["1", "0", "1", "0"]
    assert sniff_header([["id", "x"], ["1", "y"]])[0] and not sniff_header([["3", "x"], ["1", "y"]])[0]
    assert sniff_header([["score", "x"], ["1", "y"], ["2", "z"]])[0]  # a word heading a numeric column


@pytest.mark.parametrize("name,content", [
    ("semi.csv", "text;label\nbonjour, le monde;fr\nhello;en\n"),
    ("pipe.dat", "text|label\nbonjour|fr\nhello|en\n"),
    ("lines", '{"text": "bonjour", "label": "fr"}\n{"text": "hello", "label": "en"}\n'),
])
def test_delimiter_and_jsonl_are_sniffed_from_the_content(tmp_path, name, content):
    table = read_table(write(tmp_path / name, content))
    assert table.labels == ["fr", "en"] and table.texts[1] == "hello"


def test_told_delimiter_wins(tmp_path):
    p = write(tmp_path / "d.txt", "text;label\na,b;x\nc;y\n")
    assert read_table(p, delimiter=";").texts == ["a,b", "c"]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"review": ["good", "bad"], "label": [1, 0], "tags": [["a", "b"], ["c"]]}),
                   tmp_path / "d.parquet")
    table = read_table(tmp_path / "d.parquet", label_column="label")
    assert table.texts == ["good", "bad"] and table.labels == ["1", "0"] and not table.multilabel
    tagged = read_table(tmp_path / "d.parquet", label_column="tags")
    assert tagged.multilabel and tagged.labels == [("a", "b"), ("c",)]


@pytest.mark.parametrize("name,content,kwargs,match", [
    ("ragged.tsv", "text\tlabel\nhi\ta\nhow are\tyou\tb\n", {}, "line 3 has 3 fields but the header has 2"),
    ("header_only", "text\tlabel\n", {}, "has a header but no rows"),
    ("multi.csv", "text,labels\na,x|y\nb,\n", {}, "row 3 has an empty 'labels'"),
    ("cols.csv", "text,toxic,insult\na,1,0\n", {"label_columns": ["toxic", "threat"]},
     "no column 'threat' named in --label-columns.*columns: text, toxic, insult"),
    ("flags.csv", "text,toxic,insult\na,1,maybe\n", {"label_columns": ["toxic", "insult"]},
     "row 2 has 'maybe' in label column 'insult'"),
    ("one_col", "hello\nworld\n", {}, "cannot tell how the columns.*--delimiter"),
])
def test_bad_own_files_get_one_line_errors(tmp_path, name, content, kwargs, match):
    with pytest.raises(RnnkitError, match=match) as err:
        read_table(write(tmp_path / name, content), **kwargs)
    assert "\n" not in str(err.value)


def test_multilabel_cells_are_detected_or_told(tmp_path):
    p = write(tmp_path / "m.csv", "name,languages\nAbel,French|German\nAnna,German\nPaul,French\nLi,Chinese|French\n")
    table = read_table(p)
    assert table.multilabel and table.labels == [("French", "German"), ("German",), ("French",), ("Chinese", "French")]
    assert any("multi-label" in n and "'|'" in n for n in table.notes)
    assert read_table(p, label_sep="off").labels[0] == "French|German"
    cols = write(tmp_path / "c.csv", "text,toxic,insult\nyou fool,1,1\nhello,0,0\nidiot,1,0\n")
    table = read_table(cols, label_columns=["toxic", "insult"])
    assert table.multilabel and table.labels == [("toxic", "insult"), (), ("toxic",)]


def test_multilabel_split_keeps_rare_labels_in_val_and_test():
    labels = [("a",)] * 80 + [("a", "b")] * 10 + [("c",)] * 10
    split = stratified_split(labels, 0.1, 0.1, seed=0)
    assert sum(1 for y, s in zip(labels, split) if "b" in y and s == "test") == 1
    assert sum(1 for y, s in zip(labels, split) if "c" in y and s == "val") == 1


def test_python_data_dataframe_and_pairs():
    pairs = [(f"text {i}", "pos" if i % 2 else "neg") for i in range(20)]
    table = table_from_data(pairs)
    assert table.texts[1] == "text 1" and table.labels[:2] == ["neg", "pos"]
    splits = splits_from_table(table_from_data([(f"t{i}", ["x", "y"][: 1 + i % 2]) for i in range(30)]), 0.1, 0.1, 0)
    assert splits.multilabel and splits.train.labels[0] in (("x",), ("x", "y"))
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"review": ["good film", "bad"], "stars": [5, 1]})
    assert table_from_data(df, label_column="stars").labels == ["5", "1"]
    with pytest.raises(RnnkitError, match="DataFrame or a list of \\(text, label\\) pairs; got str"):
        table_from_data("reviews.csv")


def test_label_folder_one_file_per_class(tmp_path):
    write(tmp_path / "Korean.txt", "Ahn\nBaik\n\n")
    write(tmp_path / "Greek.txt", "Adamidis\n")
    table = read_label_folder(tmp_path)
    assert sorted(zip(table.texts, table.labels)) == [("Adamidis", "Greek"), ("Ahn", "Korean"), ("Baik", "Korean")]


def test_folder_of_split_files_carves_val_from_train(tmp_path):
    write(tmp_path / "train.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(40)))
    write(tmp_path / "test.csv", "text,label\nq,0\nr,1\n")
    splits = load_path(tmp_path, val_fraction=0.25)
    assert splits.sizes() == {"train": 30, "val": 10, "test": 2}
    assert not set(splits.train.texts) & set(splits.val.texts)


def test_stratified_split_is_seeded_and_keeps_class_shares():
    labels = ["a"] * 100 + ["b"] * 20 + ["c"] * 2
    s1 = stratified_split(labels, 0.1, 0.1, seed=3)
    assert s1 == stratified_split(labels, 0.1, 0.1, seed=3)
    assert s1 != stratified_split(labels, 0.1, 0.1, seed=4)
    count = lambda lab, part: sum(1 for l, s in zip(labels, s1) if l == lab and s == part)
    assert (count("a", "test"), count("b", "test"), count("b", "val")) == (10, 2, 2)
    assert count("c", "train") == 2  # too small to split: all of it trains


def test_duplicates_are_dropped_before_splitting(tmp_path):
    write(tmp_path / "d.csv", "text,label\n" + "same,a\n" * 10 + "".join(f"w{i},b\n" for i in range(20)))
    splits = load_path(tmp_path / "d.csv")
    assert sum(len(splits[s]) for s in ("train", "val", "test")) == 21
    assert any("dropped 9 repeated" in n for n in splits.notes)


# --- named datasets ------------------------------------------------------------

@pytest.fixture
def no_roots(tmp_path, monkeypatch):
    monkeypatch.delenv("RNNKIT_DATA_DIR", raising=False)
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RNNKIT_OFFLINE", "1")
    return tmp_path


def test_words_is_built_in_and_offline(no_roots):
    splits = load_dataset("words")
    assert len(set(splits.train.labels)) == 10
    assert not set(splits.train.texts) & set(splits.test.texts)


def test_missing_named_dataset_names_file_and_folders(no_roots):
    with pytest.raises(RnnkitError) as err:
        load_dataset("surnames", data_dir=str(no_roots / "mine"))
    msg = str(err.value)
    assert "surnames/surnames_with_splits.csv" in msg and str(no_roots / "mine") in msg and "cache" in msg


def test_data_dir_then_env_then_cache(no_roots, monkeypatch):
    for root in ("a", "b", "cache"):
        write_dir = no_roots / root / "surnames"
        write_dir.mkdir(parents=True)
        write(write_dir / "surnames_with_splits.csv", "nationality,split,surname\nX,train,a\nY,val,b\nX,test,c\n")
    monkeypatch.setenv("RNNKIT_DATA_DIR", str(no_roots / "b"))
    assert data.find_dataset("surnames", str(no_roots / "a")) == no_roots / "a"
    assert data.find_dataset("surnames") == no_roots / "b"
    monkeypatch.delenv("RNNKIT_DATA_DIR")
    assert data.find_dataset("surnames") == no_roots / "cache"


def test_unknown_name_is_an_error(no_roots):
    with pytest.raises(RnnkitError, match="unknown dataset 'imdb'"):
        load_dataset("imdb")


def test_download_verifies_sha256(tmp_path):
    src = write(tmp_path / "src.csv", "text,label\na,b\n")
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "f.csv"
    download(Remote(src.as_uri(), good), dest, progress=False)
    assert dest.read_bytes() == src.read_bytes()
    bad_dest = tmp_path / "out" / "g.csv"
    with pytest.raises(RnnkitError, match="sha256"):
        download(Remote(src.as_uri(), "0" * 64), bad_dest, progress=False)
    assert not bad_dest.exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["f.csv"]  # no temp files left


def test_download_extracts_zip_member_flat(tmp_path):
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/names/Korean.txt", "Ahn\n")
        zf.writestr("data/eng-fra.txt", "x")
    dest = tmp_path / "cache" / "names"
    download(Remote(archive.as_uri(), member="data/names/"), dest, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == ["Korean.txt"]


def test_ensure_dataset_downloads_into_cache(no_roots, monkeypatch):
    src = write(no_roots / "remote.csv", "nationality,split,surname\nX,train,a\nY,val,b\nX,test,c\n")
    info = data.DATASETS["surnames"]
    monkeypatch.setitem(data.DATASETS, "surnames", data.DatasetInfo(
        info.name, info.description, info.files,
        (Remote(src.as_uri(), hashlib.sha256(src.read_bytes()).hexdigest()),)))
    monkeypatch.delenv("RNNKIT_OFFLINE")
    root = ensure_dataset("surnames", progress=False)
    assert (root / "surnames" / "surnames_with_splits.csv").exists()
    assert load_dataset("surnames").sizes() == {"train": 1, "val": 1, "test": 1}


def test_failed_download_is_a_clear_error(no_roots, monkeypatch):
    monkeypatch.delenv("RNNKIT_OFFLINE")
    info = data.DATASETS["surnames"]
    monkeypatch.setitem(data.DATASETS, "surnames", data.DatasetInfo(
        info.name, info.description, info.files, (Remote((no_roots / "missing.csv").as_uri()),)))
    with pytest.raises(RnnkitError, match="download failed.*--data-dir"):
        ensure_dataset("surnames", progress=False)


# --- the real datasets, when ../shared/data is present ---------------------------

def test_surnames_book_split(shared_data):
    splits = load_dataset("surnames", str(shared_data))
    assert splits.sizes() == {"train": 7680, "val": 1640, "test": 1660}
    assert len(set(splits.train.labels)) == 18


def test_names_folder_is_split_stratified(shared_data):
    splits = load_dataset("names", str(shared_data))
    total = sum(splits.sizes().values())
    assert total < 20068  # exact duplicates dropped
    assert len(set(splits.test.labels)) == 18
    assert abs(len(splits.test) / total - 0.1) < 0.01


def test_nsmc_reads_train_and_test_files(shared_data):
    if not (shared_data / "nsmc" / "ratings_test.txt").exists():
        pytest.skip("nsmc not present")
    splits = load_dataset("nsmc", str(shared_data))
    assert len(splits.test) == 50000 and len(splits.train) + len(splits.val) == 150000
    assert set(splits.test.labels) == {"0", "1"}
