import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import rnnkit
from rnnkit.errors import RnnkitError
from rnnkit.run import load_tensors

from conftest import tiny_config


def test_training_learns_and_writes_a_complete_run(toy_csv, tmp_path):
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "run", epochs=4))
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "vectorizer.json", "model.safetensors", "metrics.json", "history.jsonl",
            "confusion_matrix.png", "history.png", "run.json"} <= files
    assert "checkpoint" not in files
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.8 and 0 < metrics["test"]["macro_f1"] <= 1
    assert set(metrics["test"]["per_class"]) == {"alpha", "beta", "gamma"}
    history = [json.loads(l) for l in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert run.predict(["abcabc"])[0].label == "alpha"


def test_same_seed_same_result(toy_csv, tmp_path):
    a = rnnkit.train(tiny_config(toy_csv, tmp_path / "a", epochs=2))
    b = rnnkit.train(tiny_config(toy_csv, tmp_path / "b", epochs=2))
    c = rnnkit.train(tiny_config(toy_csv, tmp_path / "c", epochs=2, seed=1))
    wa, wb, wc = (load_tensors(r.path / "model.safetensors") for r in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert a.metrics["test"] == b.metrics["test"]


@pytest.mark.parametrize("cell,optimizer,pooling", [("rnn", "sgd", "last"), ("gru", "rmsprop", "mean"),
                                                    ("lstm", "adam", "attention")])
def test_cells_optimizers_poolings_all_train(toy_csv, tmp_path, cell, optimizer, pooling):
    lr = 0.1 if optimizer == "sgd" else 1e-2
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "r", cell=cell, optimizer=optimizer, pooling=pooling,
                                   lr=lr, momentum=0.9 if optimizer == "sgd" else 0.0, class_weights=True,
                                   label_smoothing=0.1, epochs=4))
    assert run.metrics["val"]["accuracy"] > 0.6


def test_early_stopping_stops_and_keeps_best(toy_csv, tmp_path):
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "r", epochs=50, early_stopping=1, lr=0.05))
    history = [json.loads(l) for l in (run.path / "history.jsonl").read_text().splitlines()]
    assert len(history) < 50
    best = max(h["val_accuracy"] for h in history)
    assert run.metrics["val"]["accuracy"] == pytest.approx(best)


def test_bad_input_leaves_nothing_behind(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\n" + "".join(f"word{i},only_one_class\n" for i in range(30)))
    with pytest.raises(RnnkitError, match="at least 2"):
        rnnkit.train(tiny_config(bad, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(RnnkitError, match="hidden_size"):
        rnnkit.train(tiny_config(bad, tmp_path / "out", hidden_size=-1))
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite_a_run(toy_csv, tmp_path):
    rnnkit.train(tiny_config(toy_csv, tmp_path / "r", epochs=1))
    with pytest.raises(RnnkitError, match="not empty"):
        rnnkit.train(tiny_config(toy_csv, tmp_path / "r", epochs=1))
    with pytest.raises(RnnkitError, match="already finished"):
        rnnkit.train(resume=str(tmp_path / "r"))


AVERAGED = ["--set", "ema=0.9", "--set", "ngram_order=3"]
ROW_WISE = ["--set", "sparse_embedding=true"]  # RowAdam: its checkpoint must continue exactly too


def _train_cmd(toy_csv, out, threads=1, extra=AVERAGED):
    return [sys.executable, "-m", "rnnkit", "train", "--dataset", str(toy_csv), "--out", str(out),
            "--embedding-dim", "16", "--hidden-size", "32", "--epochs", "4", "--batch-size", "8",
            "--no-progress", "--threads", str(threads), "--early-stopping", "10",
            "--lr", "0.01", "--set", "scheduler=linear", *extra]


@pytest.mark.parametrize("extra", [AVERAGED, ROW_WISE], ids=["ema-ngrams", "row-wise"])
def test_resume_after_sigkill_matches_an_uninterrupted_run(toy_csv, tmp_path, extra):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    full = subprocess.run(_train_cmd(toy_csv, tmp_path / "full", extra=extra), env=env, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr

    proc = subprocess.Popen(_train_cmd(toy_csv, tmp_path / "cut", extra=extra), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = tmp_path / "cut" / "history.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    time.sleep(0.15)  # now inside epoch 3
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (tmp_path / "cut" / "run.json").exists()
    with pytest.raises(RnnkitError, match="unfinished run.*--resume"):
        rnnkit.load(tmp_path / "cut")

    resumed = subprocess.run([sys.executable, "-m", "rnnkit", "train", "--resume", str(tmp_path / "cut"),
                              "--threads", "1", "--no-progress"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = rnnkit.load(tmp_path / "full"), rnnkit.load(tmp_path / "cut")
    assert a.metrics["test"] == b.metrics["test"]
    assert a.metrics["val"] == b.metrics["val"]
    wa, wb = load_tensors(a.path / "model.safetensors"), load_tensors(b.path / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ha = [json.loads(l)["val_loss"] for l in (a.path / "history.jsonl").read_text().splitlines()]
    hb = [json.loads(l)["val_loss"] for l in (b.path / "history.jsonl").read_text().splitlines()]
    assert ha == hb


def test_slanted_triangular_rises_then_falls_per_batch(toy_csv, tmp_path):
    from rnnkit.trainer import SlantedTriangular

    f = SlantedTriangular(100, warmup=0.1, ratio=32)
    assert f(0) == pytest.approx(1 / 32) and f(10) == pytest.approx(1.0) and f(100) == pytest.approx(1 / 32)
    assert f(5) < f(10) and f(55) == pytest.approx((1 + 0.5 * 31) / 32)
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "r", epochs=4, scheduler="linear", lr=0.01,
                                   early_stopping=None))
    lrs = [json.loads(l)["lr"] for l in (run.path / "history.jsonl").read_text().splitlines()]
    # stepped after every batch: after epoch 1 it is past the peak and falling, and ends near lr/32
    assert lrs == sorted(lrs, reverse=True) and lrs[0] < 0.01 and lrs[-1] == pytest.approx(0.01 / 32, rel=0.05)


def test_single_layer_rnn_dropout_is_reported(toy_csv, tmp_path):
    lines = []
    rnnkit.train(tiny_config(toy_csv, tmp_path / "r", epochs=1, rnn_dropout=0.5), log=lines.append)
    assert any("has no effect with num_layers=1" in l for l in lines)


# --- devices and mixed precision -------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


def test_device_defaults_to_auto_and_amp_needs_cuda(toy_csv, tmp_path):
    assert rnnkit.Config().device == "auto" and rnnkit.Config().amp == "off"
    with pytest.raises(RnnkitError, match="amp must be one of"):
        rnnkit.Config(amp="int8").validate()
    with pytest.raises(RnnkitError, match="amp=bf16 needs a CUDA device"):
        rnnkit.train(tiny_config(toy_csv, tmp_path / "r", device="cpu", amp="bf16"))
    assert not (tmp_path / "r").exists()


def test_encoded_split_stays_on_the_cpu_for_cpu_training():
    from rnnkit.vectorizer import EncodedSplit

    split = EncodedSplit(torch.ones(4, 3, dtype=torch.int32), torch.tensor([3, 1, 2, 3]), torch.tensor([0, 1, 0, 1]))
    assert split.to(torch.device("cpu")) is split


@cuda
def test_encoded_split_is_held_on_the_gpu_and_batches_come_from_there():
    from rnnkit.vectorizer import EncodedSplit

    split = EncodedSplit(torch.ones(4, 3, dtype=torch.int32), torch.tensor([3, 1, 2, 3]), torch.tensor([0, 1, 0, 1]))
    held = split.to(torch.device("cuda"))
    ids, lengths, y = held.batch(torch.tensor([1, 2]))
    assert ids.is_cuda and y.is_cuda and not lengths.is_cuda
    assert ids.shape == (2, 2) and ids.dtype == torch.int64


@cuda
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_cuda_training_learns_with_each_precision(toy_csv, tmp_path, amp):
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / amp, epochs=4, device="cuda", amp=amp))
    assert run.metrics["test"]["accuracy"] > 0.8
    assert torch.backends.cudnn.benchmark


# --- speed features: fused optimizers, CPU precision, row-sparse embedding updates -------------

@pytest.mark.parametrize("name,impl", [("adam", "fused"), ("adamw", "fused"), ("sgd", "fused"), ("rmsprop", "foreach")])
def test_optimizers_use_torchs_fused_or_foreach_implementation(name, impl):
    from rnnkit.trainer import make_optimizer

    opt = make_optimizer(rnnkit.Config(optimizer=name), torch.nn.Linear(3, 2).parameters())
    assert opt.defaults[impl] is True


def test_precision_auto_follows_native_bf16_support(monkeypatch):
    from rnnkit import predict, trainer

    cpu = torch.device("cpu")
    assert trainer.autocast_dtype(rnnkit.Config(precision="fp32"), cpu) is None
    assert trainer.autocast_dtype(rnnkit.Config(precision="bf16"), cpu) is torch.bfloat16
    monkeypatch.setattr(predict, "cpu_has_native_bf16", lambda: False)
    assert trainer.autocast_dtype(rnnkit.Config(), cpu) is None
    monkeypatch.setattr(predict, "cpu_has_native_bf16", lambda: True)
    assert trainer.autocast_dtype(rnnkit.Config(), cpu) is torch.bfloat16
    with pytest.raises(RnnkitError, match="precision must be one of auto, fp32, bf16"):
        rnnkit.Config(precision="fp16").validate()


def test_bf16_on_a_cpu_without_it_trains_and_says_it_is_emulated(toy_csv, tmp_path, monkeypatch):
    from rnnkit import padded, trainer

    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(padded, "cpu_has_native_bf16", lambda: False)
    said = []
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "run", epochs=2, precision="bf16"), log=said.append)
    assert run.metrics["precision"] == "bf16"
    assert any("no native bf16" in line and "--precision auto" in line for line in said)


def test_sparse_embedding_is_automatic_and_checked():
    from rnnkit.trainer import ROW_UPDATES_FROM, row_updates

    assert rnnkit.Config().sparse_embedding is None
    assert rnnkit.Config().update({"sparse_embedding": "auto"}).sparse_embedding is None
    with pytest.raises(RnnkitError, match="sparse_embedding needs optimizer adam or adamw"):
        rnnkit.Config(sparse_embedding=True, optimizer="sgd").validate()
    with pytest.raises(RnnkitError, match="needs weight_decay=0"):
        rnnkit.Config(sparse_embedding=True, optimizer="adam", weight_decay=0.01).validate()
    with pytest.raises(RnnkitError, match="does not work with ema"):
        rnnkit.Config(sparse_embedding=True, ema=0.99).validate()
    cpu = torch.device("cpu")
    small, large = (rnnkit.model.SequenceClassifier(n, 2, embedding_dim=4, hidden_size=4, head_hidden=4)
                    for n in (ROW_UPDATES_FROM - 1, ROW_UPDATES_FROM))
    assert not row_updates(rnnkit.Config(), small, cpu) and row_updates(rnnkit.Config(), large, cpu)
    assert not row_updates(rnnkit.Config(ema=0.99), large, cpu)
    assert not row_updates(rnnkit.Config(optimizer="adam", weight_decay=0.01), large, cpu)
    assert row_updates(rnnkit.Config(optimizer="adam", weight_decay=0.0), large, cpu)
    assert not row_updates(rnnkit.Config(sparse_embedding=False), large, cpu)
    assert row_updates(rnnkit.Config(sparse_embedding=True), small, cpu)


def test_sparse_embedding_trains_reproducibly_and_its_optimizer_checkpoints(toy_csv, tmp_path):
    from torch import nn

    from rnnkit import run as runio
    from rnnkit.trainer import clip_grad_norm, make_optimizer

    cfg = dict(sparse_embedding=True, optimizer="adam", weight_decay=0.0)
    a = rnnkit.train(tiny_config(toy_csv, tmp_path / "a", epochs=3, **cfg))
    b = rnnkit.train(tiny_config(toy_csv, tmp_path / "b", epochs=3, **cfg))
    assert a.metrics["test"]["accuracy"] > 0.8
    wa, wb = load_tensors(a.path / "model.safetensors"), load_tensors(b.path / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    # Clipping a sparse gradient equals clipping its dense twin.
    emb, dense_emb = nn.Embedding(10, 4, sparse=True), nn.Embedding(10, 4)
    dense_emb.load_state_dict(emb.state_dict())
    for e in (emb, dense_emb):
        (e(torch.tensor([1, 1, 3])) * 5).sum().backward()
    clip_grad_norm([emb.weight], 0.5)
    nn.utils.clip_grad_norm_([dense_emb.weight], 0.5)
    torch.testing.assert_close(emb.weight.grad.to_dense(), dense_emb.weight.grad)

    # The combined optimizer (fused Adam + RowAdam) survives a checkpoint round trip.
    model = a.model.train()
    model.embedding.sparse = True
    params = [p for n, p in model.named_parameters() if not n.startswith("embedding.")]
    opt = make_optimizer(rnnkit.Config(lr=1e-3, **cfg), params, sparse=[model.embedding.weight])
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    ids, lengths = torch.tensor([[2, 5, 6, 3]]), torch.tensor([4])
    model(ids, lengths).sum().backward()
    opt.step()
    sched.step()
    run_dir = tmp_path / "ckpt"
    run_dir.mkdir()
    runio.save_checkpoint(run_dir, model, model.state_dict(), opt, sched, {"epoch": 1})
    opt2 = make_optimizer(rnnkit.Config(lr=1e-3, **cfg), params, sparse=[model.embedding.weight])
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, 1, 0.5)
    runio.load_checkpoint(run_dir, model, opt2, sched2)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups] == [5e-4] * 2
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys() and len(s1) == len(list(model.parameters()))
    for pid in s1:
        for key, value in s1[pid].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(s2[pid][key]))


def test_row_wise_embedding_updates_survive_pretraining(toy_csv, tmp_path):
    # Pretraining's own dense Adam needs dense embedding gradients; the classifier's RowAdam sparse ones.
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "p", epochs=2, pretrain_epochs=1, sparse_embedding=True))
    assert len(run.metrics["pretrain"]) == 1 and run.metrics["test"]["accuracy"] > 0.5


def test_weight_average_ramps_then_follows_the_decay():
    from rnnkit.trainer import WeightAverage

    model = torch.nn.Linear(2, 1)
    average = WeightAverage(model, decay=0.99)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update()  # step 1: decay min(0.99, 2/11)
    torch.testing.assert_close(average.model.weight, start + (1 - 2 / 11))
    average.steps = 10_000
    before = average.model.weight.detach().clone()
    average.update()
    torch.testing.assert_close(average.model.weight, before + 0.01 * (model.weight - before))
    assert not average.model.weight.requires_grad


def test_ema_run_saves_the_averaged_weights_it_validated(toy_csv, tmp_path):
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "r", epochs=2, ema=0.9))
    history = [json.loads(l) for l in (run.path / "history.jsonl").read_text().splitlines()]
    best = max(history, key=lambda h: h["val_accuracy"])
    assert run.metrics["val"]["accuracy"] == pytest.approx(best["val_accuracy"])
    plain = rnnkit.train(tiny_config(toy_csv, tmp_path / "p", epochs=2))
    wa, wb = load_tensors(run.path / "model.safetensors"), load_tensors(plain.path / "model.safetensors")
    assert not all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("backend", ["torch", "scratch"])
def test_lstm_with_projections_trains_reloads_and_moves_between_backends(toy_csv, tmp_path, backend):
    from rnnkit.model import SequenceClassifier

    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "r", backend=backend, proj_size=4, epochs=3,
                                   baseline=False), log=lambda m: None)
    assert json.loads((run.path / "config.json").read_text())["proj_size"] == 4
    from rnnkit.predict import autocast_dtype

    assert run.amp == autocast_dtype(run.config, torch.device("cpu"))  # as the run trained
    loaded = rnnkit.load(run.path, precision="fp32")  # the backends agree to fp32's rounding
    assert loaded.model.rnn.proj_size == 4 and loaded.model.rnn.weight_hr_l0.shape == (4, 16)
    texts = ["abcabc", "hijhij", "opqopq"]
    expected = loaded.predict_proba(texts)
    # The saved weights load into the other backend's model and give the same probabilities.
    other = "scratch" if backend == "torch" else "torch"
    twin = SequenceClassifier.from_config(loaded.config.update({"backend": other}), len(loaded.vectorizer.vocab),
                                          len(loaded.vectorizer.labels)).eval()
    twin.load_state_dict(load_tensors(run.path / "model.safetensors"))
    loaded.model = twin
    torch.testing.assert_close(loaded.predict_proba(texts), expected, atol=1e-5, rtol=1e-5)


def test_rdrop_adds_the_symmetric_kl_of_two_dropout_draws(toy_csv, tmp_path):
    from rnnkit.trainer import rdrop_loss

    ce = torch.nn.CrossEntropyLoss()
    a, b, y = torch.randn(6, 3), torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    assert rdrop_loss(a, a, y, ce, 5.0) == pytest.approx(float(ce(a, y)))  # same draw: no KL
    p, q = a.softmax(-1), b.softmax(-1)
    kl = float(((p * (p / q).log()).sum(-1) + (q * (q / p).log()).sum(-1)).mean()) / 2
    assert rdrop_loss(a, b, y, ce, 2.0) == pytest.approx(float(ce(a, y) + ce(b, y)) / 2 + 2.0 * kl, rel=1e-5)
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "run", epochs=3, rdrop=1.0, token_dropout=0.1))
    assert run.metrics["test"]["accuracy"] > 0.8
    with pytest.raises(RnnkitError, match="rdrop"):
        rnnkit.Config(rdrop=-1).validate()


def test_adversarial_step_raises_the_loss_by_a_move_relative_to_each_text(toy_csv, tmp_path):
    from rnnkit.model import SequenceClassifier
    from rnnkit.trainer import adversarial_step

    torch.manual_seed(0)
    model = SequenceClassifier(vocab_size=12, num_classes=3, embedding_dim=8, hidden_size=8, head_hidden=8,
                               embedding_dropout=0.0, head_dropout=0.0).eval()
    ids, lengths, y = torch.randint(2, 12, (4, 6)), torch.tensor([6, 5, 3, 2]), torch.tensor([0, 1, 2, 0])
    ids[1, 5:], ids[2, 3:], ids[3, 2:] = 0, 0, 0
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    embedded = model.embed(ids)
    embedded.retain_grad()
    clean = loss_fn(model(ids, lengths, embedded=embedded), y)
    clean.backward()
    step = adversarial_step(embedded, lengths, 0.5)
    token = embedded.detach().flatten(1).norm(dim=1) / lengths.sqrt()  # padding rows are zero
    torch.testing.assert_close(step.flatten(1).norm(dim=1), 0.5 * token)
    torch.testing.assert_close(torch.nn.functional.cosine_similarity(step.flatten(1), embedded.grad.flatten(1)),
                               torch.ones(4))
    assert float(step[1, 5:].abs().sum()) == 0.0 and float(step[3, 2:].abs().sum()) == 0.0  # padding stays
    with torch.no_grad():
        moved = loss_fn(model(ids, lengths, embedded=embedded + step), y)
        random = torch.randn_like(step) * (ids != 0).unsqueeze(-1)
        random *= (step.flatten(1).norm(dim=1) / random.flatten(1).norm(dim=1)).view(-1, 1, 1)
        assert moved > clean + 1e-4 and moved > loss_fn(model(ids, lengths, embedded=embedded + random), y)
    said = []
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "run", epochs=3, adversarial=0.3), log=said.append)
    assert run.metrics["test"]["accuracy"] > 0.8
    assert any("adversarial training on the embeddings, size 0.3" in line for line in said)
    with pytest.raises(RnnkitError, match="adversarial"):
        rnnkit.Config(adversarial=-0.1).validate()
    # A run folder saved before the setting existed resumes without it; one saved with it keeps it.
    def saved_config(folder):
        return rnnkit.Config.from_saved(json.loads((folder / "config.json").read_text()))

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps({"dataset": "x", "epochs": 2}))
    assert saved_config(tmp_path / "old").adversarial == 0.0 and saved_config(tmp_path / "run").adversarial == 0.3
    said.clear()
    both = rnnkit.train(tiny_config(toy_csv, tmp_path / "both", epochs=1, rdrop=1.0, adversarial=0.3), log=said.append)
    assert both.config.adversarial == 0.0 and any("rdrop replaces adversarial" in line for line in said)


def test_an_adversarial_batch_trains_on_the_mean_of_the_clean_and_the_moved_loss():
    import copy

    from rnnkit.model import SequenceClassifier
    from rnnkit.trainer import adversarial_step, train_epoch
    from rnnkit.vectorizer import EncodedSplit

    torch.manual_seed(0)
    model = SequenceClassifier(vocab_size=12, num_classes=3, embedding_dim=8, hidden_size=8, head_hidden=8,
                               embedding_dropout=0.0, head_dropout=0.0)
    ids, lengths, y = torch.randint(2, 12, (4, 6)), torch.tensor([6, 5, 3, 2]), torch.tensor([0, 1, 2, 0])
    ids[1, 5:], ids[2, 3:], ids[3, 2:] = 0, 0, 0
    twin, loss_fn = copy.deepcopy(model), torch.nn.CrossEntropyLoss()
    params = list(twin.parameters())
    embedded = twin.embed(ids)
    embedded.retain_grad()
    clean = loss_fn(twin(ids, lengths, embedded=embedded), y)
    clean.backward(retain_graph=True)
    clean_grads = [p.grad.clone() for p in params]
    moved = loss_fn(twin(ids, lengths, embedded=twin.embed(ids) + adversarial_step(embedded, lengths, 0.3)), y)
    moved_grads = torch.autograd.grad(moved, params)
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)  # one step moves each weight by minus its gradient
    train_epoch(model, EncodedSplit(ids.int(), lengths, y), [torch.arange(4)], sgd, loss_fn, None,
                torch.device("cpu"), adversarial=0.3)
    for p, before, a, b in zip(model.parameters(), params, clean_grads, moved_grads):
        torch.testing.assert_close(p.detach(), before.detach() - 0.5 * (a + b), atol=1e-6, rtol=1e-5)


def test_an_adversarial_batch_runs_the_character_branch_once_at_the_same_step():
    import copy

    from rnnkit.model import SequenceClassifier
    from rnnkit.trainer import train_epoch
    from rnnkit.vectorizer import EncodedSplit

    class Wrapped(torch.nn.Module):  # as DDP holds the model: train_epoch then runs the branch in each pass
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    torch.manual_seed(0)
    model = SequenceClassifier(vocab_size=12, num_classes=3, embedding_dim=8, hidden_size=8, head_hidden=8,
                               embedding_dropout=0.0, head_dropout=0.0, char_branch=5, char_separator=3)
    ids, lengths, y = torch.randint(4, 12, (4, 7)), torch.tensor([7, 6, 4, 2]), torch.tensor([0, 1, 2, 0])
    ids[0, 3], ids[1, 2], ids[2, 1] = 3, 3, 3  # words, <chars>, characters; the last row has words only
    ids[1, 6:], ids[2, 4:], ids[3, 2:] = 0, 0, 0
    twice = copy.deepcopy(model)
    runs = []
    branch = model._encode_chars
    model._encode_chars = lambda *args: runs.append(1) or branch(*args)
    split, loss_fn = EncodedSplit(ids.int(), lengths, y), torch.nn.CrossEntropyLoss()
    for m in (model, Wrapped(twice)):
        train_epoch(m, split, [torch.arange(4)], torch.optim.SGD(m.parameters(), lr=1.0), loss_fn, None,
                    torch.device("cpu"), adversarial=0.3)
    assert len(runs) == 1
    for (name, a), b in zip(model.named_parameters(), twice.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_clip_grad_norm_equals_torch_bit_for_bit(scale):
    from torch import nn

    from rnnkit.trainer import clip_grad_norm

    torch.manual_seed(0)
    ours, theirs = [nn.Linear(6, 5), nn.Embedding(7, 3)], [nn.Linear(6, 5), nn.Embedding(7, 3)]
    for a, b in zip(ours, theirs):
        b.load_state_dict(a.state_dict())
    x = torch.randn(4, 6)
    for lin, emb in (ours, theirs):
        ((lin(x) * scale).sum() + (emb(torch.tensor([1, 2, 2])) * scale).sum()).backward()
    params = lambda mods: [p for m in mods for p in m.parameters()]  # noqa: E731
    total = clip_grad_norm(params(ours), 1.0)
    want = nn.utils.clip_grad_norm_(params(theirs), 1.0)
    assert torch.equal(total, want)
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(params(ours), params(theirs)))
    assert (float(want) > 1.0) == (scale == 100.0)  # both branches: clipped and not


@pytest.mark.parametrize("waits_briefly", [False, True])
def test_log_says_when_the_lstm_directions_cannot_run_at_once(toy_csv, tmp_path, monkeypatch, waits_briefly):
    from rnnkit import padded

    monkeypatch.setattr(padded, "openmp_waits_briefly", lambda: waits_briefly)
    monkeypatch.setattr(sys, "platform", "linux")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        logs = []
        rnnkit.train(tiny_config(toy_csv, tmp_path / "run", epochs=1, baseline=False, num_threads=2), log=logs.append)
    finally:
        torch.set_num_threads(before)
    said = [line for line in logs if line.startswith("speed:")]
    assert bool(said) is not waits_briefly
    assert not said or "GOMP_SPINCOUNT=10000" in said[0]


@pytest.mark.parametrize("n_batches, timed", [(30, 20), (600, 30)])
def test_the_epoch_forecast_times_20_batches_or_a_twentieth_of_the_epoch(n_batches, timed):
    from rnnkit.model import SequenceClassifier
    from rnnkit.trainer import train_epoch
    from rnnkit.vectorizer import EncodedSplit

    torch.manual_seed(0)
    split = EncodedSplit(torch.randint(4, 20, (8, 5), dtype=torch.int32), torch.full((8,), 5),
                         torch.randint(0, 2, (8,)))
    model = SequenceClassifier(20, 2, embedding_dim=4, hidden_size=4, head_hidden=4)
    calls = []
    batches = [torch.arange(4)] * n_batches
    train_epoch(model, split, batches, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.CrossEntropyLoss(),
                None, torch.device("cpu"), estimate=lambda n, s: calls.append(n))
    assert calls == [timed]  # once, after two warm-up batches


@pytest.mark.parametrize("ema", [None, 0.9])
def test_finish_reuses_the_best_epochs_validation_logits(toy_csv, tmp_path, monkeypatch, ema):
    from rnnkit import trainer

    seen, rows = {}, []  # rows: the size of each split finish predicts (test's; val's too if it redid it)
    real_finish, real_predict = trainer.finish, trainer.predict_logits

    def counting(model, ids, *args, **kwargs):
        rows.append(len(ids))
        return real_predict(model, ids, *args, **kwargs)

    def spy(run_dir, cfg, model, best_state, vectorizer, data, loop, device, log, collect, val_logits=None,
            splits=None):
        model.load_state_dict(best_state)
        seen.update(given=val_logits, fresh=real_predict(model, data["val"].ids, data["val"].lengths,
                                                         cfg.batch_size * 4, device, trainer.autocast_dtype(cfg, device)))
        monkeypatch.setattr(trainer, "predict_logits", counting)
        try:
            return real_finish(run_dir, cfg, model, best_state, vectorizer, data, loop, device, log, collect,
                               val_logits, splits)
        finally:
            monkeypatch.setattr(trainer, "predict_logits", real_predict)

    monkeypatch.setattr(trainer, "finish", spy)
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "r", epochs=4, ema=ema, baseline=False), log=lambda m: None)
    assert seen["given"] is not None and torch.equal(seen["given"], seen["fresh"])  # the same numbers ...
    assert rows == [run.metrics["test"]["n"]]  # ... not computed again: finish predicted the test split only


def test_durations_in_the_forecast_keep_a_decimal_under_ten_seconds():
    from rnnkit.trainer import _duration

    assert [_duration(s) for s in (1.44, 9.94, 9.96, 27.4, 150, 7200)] == ["1.4 s", "9.9 s", "10 s", "27 s", "2 min", "2.0 h"]


def test_a_slow_forecast_names_the_settings_that_cut_the_time():
    from rnnkit.config import resolve_config
    from rnnkit.trainer import faster_settings

    nsmc = rnnkit.Config.for_dataset("nsmc")
    assert faster_settings(nsmc) == ["--set char_branch=0 (the character branch costs 1.2-1.6x per step)",
                                     "--config nsmc-fast (one layer, no adversarial training, 3 epochs)"]
    assert faster_settings(resolve_config("nsmc-words")) == faster_settings(nsmc)[1:]
    assert faster_settings(resolve_config("nsmc-fast")) == []
    assert faster_settings(resolve_config("nsmc-chars"))[0].startswith("--set char_branch=0")
    own = rnnkit.Config(dataset="mine.csv", adversarial=0.3, num_layers=2)
    assert [hint.split()[0] for hint in faster_settings(own)] == ["--set", "--num-layers"]
    assert faster_settings(rnnkit.Config(dataset="mine.csv", adversarial=0.0)) == []


def test_logit_adjustment_trains_and_refuses_heads_it_cannot_shift(toy_csv, tmp_path):
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "r", logit_adjustment=0.5, epochs=4))
    assert run.metrics["val"]["accuracy"] > 0.6
    with pytest.raises(RnnkitError, match=r"logit_adjustment must be a number in \[0.0, 3.0\]"):
        tiny_config(toy_csv, tmp_path / "x", logit_adjustment=-1.0).validate()
    two = tmp_path / "two.csv"
    two.write_text("text,label\n" + "".join(f"{w}{i},{w}\n" for i in range(40) for w in ("ab", "cd")))
    with pytest.raises(RnnkitError, match="logit_adjustment works with the softmax head"):
        rnnkit.train(tiny_config(two, tmp_path / "b", head="binary", logit_adjustment=0.5))
    assert not (tmp_path / "b").exists()


def test_python_keywords_get_the_named_datasets_defaults_as_the_cli_does():
    # rnnkit.train(dataset="nsmc") must train the tuned NSMC model that `rnnkit train --dataset nsmc` trains,
    # not the general defaults; an explicit Config object is taken as it is, and own data gets no dataset's.
    from rnnkit.config import DATASET_DEFAULTS, Config, resolve_config
    from rnnkit.trainer import settings_for

    nsmc = settings_for(None, {"dataset": "nsmc", "epochs": 2})
    assert nsmc == resolve_config(None, {"dataset": "nsmc", "epochs": 2})
    assert (nsmc.tokenizer, nsmc.num_layers, nsmc.epochs) == ("kiwi", 2, 2)
    assert settings_for({"dataset": "surnames"}, {"seed": 3}).logit_adjustment == 0.2
    assert settings_for(None, {}).add_bos_eos is DATASET_DEFAULTS["words"]["add_bos_eos"]  # words, as `rnnkit train`
    assert settings_for(Config(dataset="nsmc"), {}).tokenizer == Config().tokenizer
    assert settings_for(None, {"epochs": 2}, own_data=True) == Config(epochs=2)
    with pytest.raises(RnnkitError, match="unknown setting 'epoch' in arguments"):
        settings_for(None, {"dataset": "nsmc", "epoch": 2})
