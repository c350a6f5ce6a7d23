import pytest

from rnnkit import Config
from rnnkit.config import load_config_file
from rnnkit.errors import RnnkitError


def test_defaults_are_valid():
    Config().validate()


@pytest.mark.parametrize("key,value,match", [
    ("epochs", 0, "epochs"),
    ("epochs", 10**9, "epochs"),
    ("lr", -1.0, "lr"),
    ("lr", float("nan"), "lr"),
    ("hidden_size", 0, "hidden_size"),
    ("embedding_dropout", 1.0, "embedding_dropout"),
    ("batch_size", 2.5, "batch_size"),
    ("cell", "transformer", "cell must be one of rnn, lstm, gru"),
    ("pooling", "sum", "pooling"),
    ("device", "tpu", "device"),
    ("char_branch", -1, "char_branch"),
])
def test_absurd_values_are_rejected_with_the_setting_named(key, value, match):
    with pytest.raises(RnnkitError, match=match):
        Config().update({key: value}).validate()


def test_unknown_setting_suggests_the_close_one():
    with pytest.raises(RnnkitError, match="did you mean 'hidden_size'"):
        Config().update({"hiden_size": 3})


def test_strings_from_flags_are_coerced():
    cfg = Config().update({"epochs": "7", "lr": "0.01", "bidirectional": "false", "max_len": "none",
                           "label_names": '{"0": "neg"}'})
    assert (cfg.epochs, cfg.lr, cfg.bidirectional, cfg.max_len) == (7, 0.01, False, None)
    assert cfg.label_names == {"0": "neg"}
    with pytest.raises(RnnkitError, match="epochs"):
        Config().update({"epochs": "many"})


def test_toml_and_yaml_files(tmp_path):
    (tmp_path / "a.toml").write_text('cell = "gru"\nepochs = 4\n')
    (tmp_path / "b.yaml").write_text("train:\n  cell: rnn\n  lr: 0.5\n")
    assert Config().update(load_config_file(tmp_path / "a.toml")).cell == "gru"
    cfg = Config().update(load_config_file(tmp_path / "b.yaml"))
    assert (cfg.cell, cfg.lr) == ("rnn", 0.5)
    (tmp_path / "bad.toml").write_text("cell = \n")
    with pytest.raises(RnnkitError, match="cannot parse"):
        load_config_file(tmp_path / "bad.toml")
    with pytest.raises(RnnkitError, match="not found"):
        load_config_file(tmp_path / "missing.toml")


def test_dict_round_trip():
    cfg = Config(cell="gru", label_names={"0": "negative"})
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_dataset_defaults_then_file_then_flags(tmp_path):
    from rnnkit.config import resolve_config

    cfg = resolve_config(None, {"dataset": "nsmc"})
    assert (cfg.tokenizer, cfg.cell, cfg.pooling, cfg.min_freq) == ("kiwi", "lstm", "maxmean", 2)
    (tmp_path / "c.toml").write_text('dataset = "nsmc"\ncell = "gru"\n')
    cfg = resolve_config(str(tmp_path / "c.toml"), {"hidden_size": 32})
    assert (cfg.tokenizer, cfg.cell, cfg.hidden_size) == ("kiwi", "gru", 32)
    assert resolve_config(None, {"dataset": "surnames"}).tokenizer == "char"
    assert Config.for_dataset("nsmc", epochs=1).epochs == 1


def test_named_config_reproduces_the_study_notes():
    from rnnkit.config import resolve_config

    cfg = resolve_config("notes-nsmc", {})
    assert (cfg.dataset, cfg.tokenizer, cfg.cell, cfg.embedding_dim, cfg.hidden_size, cfg.num_layers,
            cfg.optimizer, cfg.lr, cfg.bidirectional) == ("nsmc", "okt", "lstm", 128, 64, 2, "rmsprop", 1e-3, False)
    with pytest.raises(RnnkitError, match="unknown named config 'notes'"):
        resolve_config("notes", {})


def test_nsmc_fast_is_the_one_layer_recipe_and_the_default_the_accurate_one():
    from rnnkit.config import resolve_config

    fast, default = resolve_config("nsmc-fast", {}), resolve_config(None, {"dataset": "nsmc"}).validate()
    words, chars = resolve_config("nsmc-words", {}).validate(), resolve_config("nsmc-chars", {}).validate()
    assert (fast.num_layers, fast.rnn_dropout, fast.adversarial, fast.epochs) == (1, 0.0, 0.0, 3)
    assert (default.num_layers, default.rnn_dropout, default.adversarial, default.epochs) == (2, 0.2, 0.1, 4)
    # The default reads the syllables beside the morphemes, with one dropout mask per review.
    assert (default.char_branch, default.max_len, default.locked_dropout) == (96, 300, True)
    # The recipes measured before it keep what they trained with.
    for earlier in (fast, words):
        assert (earlier.char_branch, earlier.max_len, earlier.locked_dropout) == (0, 100, False)
    assert (chars.char_branch, chars.max_len, chars.locked_dropout) == (96, 300, False)
    same = ("tokenizer", "embedding_dim", "hidden_size", "bidirectional", "pooling", "lr", "batch_size")
    for other in (fast, words, chars):
        assert [getattr(other, k) for k in same] == [getattr(default, k) for k in same]  # the rest of the nsmc defaults
    for other in (words, chars):
        assert (other.num_layers, other.adversarial, other.epochs) == (2, 0.1, 4)
    notes = resolve_config("notes-nsmc", {}).validate()
    assert (notes.tokenizer, notes.char_branch, notes.locked_dropout) == ("okt", 0, False)


def test_named_config_reproduces_the_books_surname_model():
    from rnnkit.config import resolve_config

    cfg = resolve_config("book-surnames", {"seed": 3})
    assert (cfg.dataset, cfg.cell, cfg.bidirectional, cfg.pooling, cfg.embedding_dim, cfg.hidden_size,
            cfg.head_dropout, cfg.optimizer, cfg.lr, cfg.seed) == ("surnames", "rnn", False, "last", 100, 64, 0.5,
                                                                   "adam", 1e-3, 3)
    assert cfg.ema is None and cfg.pretrain_epochs == 0  # the surnames dataset defaults do not leak in


def test_accuracy_options_are_checked():
    for bad in (dict(ema=1.0), dict(ema=0.0), dict(ngram_order=0), dict(pretrain_epochs=-1), dict(pretrain_lr=0.0),
                dict(text_vector_scale=0.0), dict(text_vector_scale=-1.0)):
        with pytest.raises(RnnkitError, match=next(iter(bad))):
            Config(**bad).validate()


def test_proj_size_only_for_lstm_below_hidden_size_and_not_fused():
    assert Config(cell="lstm", hidden_size=16, proj_size=8).validate().proj_size == 8
    for bad, match in [(dict(cell="gru", proj_size=4), "proj_size works with cell=lstm only; got cell=gru"),
                       (dict(hidden_size=16, proj_size=16), r"proj_size must be smaller than hidden_size \(16\)"),
                       (dict(proj_size=-1), "proj_size must be an integer"),
                       (dict(proj_size=4, kernel="fused"), "kernel=fused has no LSTM projections")]:
        with pytest.raises(RnnkitError, match=match):
            Config(**bad).validate()
    assert Config().update({"proj_size": "8"}).proj_size == 8


def test_locked_dropout_between_layers_needs_a_padded_kernel():
    layers = dict(locked_dropout=True, num_layers=2, rnn_dropout=0.2)
    assert Config(**layers).validate().locked_dropout
    assert Config().update({"locked_dropout": "true"}).locked_dropout is True
    for bad in (dict(kernel="packed"), dict(backend="scratch")):
        with pytest.raises(RnnkitError, match="locked_dropout between stacked layers needs a padded kernel"):
            Config(**layers, **bad).validate()
    Config(locked_dropout=True, kernel="packed").validate()  # one layer: only the embeddings' mask is locked


def test_wrongly_typed_file_values_are_one_line_errors(tmp_path):
    from rnnkit.config import resolve_config

    for line, expected in (("device = 5", "device in .* must be a string; got 5"),
                           ("lowercase = 2", "lowercase in .* must be true or false; got 2"),
                           ("label_columns = 5", "label_columns in .* must be a list or null"),
                           ("epochs = 2.5", "epochs in .* must be an integer")):
        path = tmp_path / "cfg.toml"
        path.write_text(f'dataset = "surnames"\n{line}\n')
        with pytest.raises(RnnkitError, match=expected):
            resolve_config(str(path))
    with pytest.raises(RnnkitError, match="label_names in command line must be a mapping"):
        Config().update({"label_names": "[1]"}, "command line")
    assert Config().update({"normalize": "nfkc"}, "command line").normalize == "NFKC"


def test_book_config_is_the_books_model_not_the_surnames_defaults():
    from rnnkit.config import resolve_config

    cfg = resolve_config("book-surnames")
    assert (cfg.cell, cfg.ema, cfg.pretrain_epochs, cfg.token_dropout, cfg.logit_adjustment) == ("rnn", None, 0, 0.0, 0.0)
    assert resolve_config(flags={"dataset": "surnames"}).logit_adjustment == 0.2


def test_names_trains_in_fp32_where_surnames_takes_bf16():
    import torch

    from rnnkit.config import resolve_config
    from rnnkit.predict import autocast_dtype

    # Names lost validation accuracy and macro-F1 under bf16 autocast; surnames did not (BENCHMARKS.md).
    names = resolve_config(flags={"dataset": "names"})
    assert names.precision == "fp32" and autocast_dtype(names, torch.device("cpu")) is None
    assert resolve_config(flags={"dataset": "surnames"}).precision == "auto"
    assert resolve_config(flags={"dataset": "names", "precision": "bf16"}).precision == "bf16"  # a flag still wins


def test_char_branch_refuses_what_it_cannot_combine_with():
    with pytest.raises(RnnkitError, match="char_branch does not combine with pretrain_epochs"):
        Config(char_branch=16, pretrain_epochs=2, tokenizer="kiwi").validate()
    with pytest.raises(RnnkitError, match="gives characters already"):
        Config(char_branch=16, tokenizer="char").validate()
    from rnnkit.config import resolve_config

    # The NSMC defaults turn the branch on: a character tokenizer or pretraining there is told how to turn it off.
    for flags in ({"tokenizer": "syllable"}, {"pretrain_epochs": 1}):
        with pytest.raises(RnnkitError, match="--set char_branch=0"):
            resolve_config(None, {"dataset": "nsmc", **flags}).validate()
    assert resolve_config(None, {"dataset": "nsmc", "tokenizer": "syllable", "char_branch": 0}).validate()


def test_char_branch_on_a_character_dataset_is_a_clear_error(tmp_path):
    import rnnkit
    from conftest import tiny_config, write_toy_csv

    with pytest.raises(RnnkitError, match="gives characters already"):
        rnnkit.train(tiny_config(write_toy_csv(tmp_path / "toy.csv"), tmp_path / "run", char_branch=8))
    assert not (tmp_path / "run").exists()
