import gzip
import hashlib
import json
import zipfile

import pytest

from rnnkit import data
from rnnkit.data import (Remote, download, ensure_dataset, load_dataset, load_path, read_label_folder, read_table,
                         stratified_split)
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
    ("words,label\nhi,a\n", "cannot tell which column.*--text-column"),
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
    with pytest.raises(RnnkitError, match="cannot tell the format"):
        read_table(write(tmp_path / "a.xlsx", "x"))
    with pytest.raises(RnnkitError, match="not valid JSON"):
        read_table(write(tmp_path / "b.jsonl", '{"text": "a", "label": 1}\n{oops\n'))


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
