"""Language-model pretraining of the encoder: what it predicts, what it changes, how it is reported."""

import pytest
import torch

import rnnkit
from rnnkit.model import SequenceClassifier
from rnnkit.pretrain import LanguageModelHeads, pretrain
from rnnkit.vectorizer import EncodedSplit

from conftest import tiny_config


def periodic_split(n=64, vocab=12, seed=0) -> EncodedSplit:
    """Sequences 2, 3, 4, ... counting up modulo the vocabulary: perfectly predictable both ways."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 10, (n,), generator=g)
    starts = torch.randint(0, vocab - 2, (n,), generator=g)
    ids = torch.zeros(n, 10, dtype=torch.int32)
    for i in range(n):
        ids[i, : lengths[i]] = 2 + (starts[i] + torch.arange(int(lengths[i]))) % (vocab - 2)
    return EncodedSplit(ids, lengths, torch.zeros(n, dtype=torch.long))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_loss_counts_one_prediction_per_neighbour(bidirectional):
    heads = LanguageModelHeads(4, 12, bidirectional)
    out = torch.randn(3, 5, 8 if bidirectional else 4)
    ids = torch.randint(2, 12, (3, 5))
    lengths = torch.tensor([5, 2, 1])
    loss, count = heads.loss(out, ids, lengths)
    assert count == (4 + 1 + 0) * (2 if bidirectional else 1)
    assert loss.item() > 0
    # Steps past a row's length never enter the loss.
    out2 = out.clone()
    out2[1, 2:] = 1e4
    torch.testing.assert_close(heads.loss(out2, ids, lengths)[0], loss)


def test_large_vocabularies_use_the_adaptive_softmax_also_under_bf16_autocast():
    heads = LanguageModelHeads(64, 30_000, bidirectional=True)
    assert all(isinstance(h, torch.nn.AdaptiveLogSoftmaxWithLoss) for h in heads.heads)
    encoder = torch.nn.Linear(4, 128)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = encoder(torch.randn(2, 6, 4))
        loss, count = heads.loss(out, torch.randint(0, 30_000, (2, 6)), torch.tensor([6, 4]))
    loss.backward()
    assert count == 16 and torch.isfinite(loss) and encoder.weight.grad is not None


def test_pretraining_learns_the_sequences_and_leaves_the_head_alone():
    torch.manual_seed(0)
    model = SequenceClassifier(12, 2, cell="gru", embedding_dim=8, hidden_size=16, embedding_dropout=0.0)
    head_before = model.fc2.weight.detach().clone()
    rnn_before = model.rnn.weight_hh_l0.detach().clone()
    history = pretrain(model, periodic_split(n=256), epochs=6, batch_size=16, lr=2e-2, seed=0,
                       device=torch.device("cpu"), progress=False)
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert torch.equal(model.fc2.weight, head_before)
    assert not torch.equal(model.rnn.weight_hh_l0, rnn_before)
    assert all(p.grad is None for p in model.parameters())


def test_train_with_pretraining_reports_it(toy_csv, tmp_path):
    run = rnnkit.train(tiny_config(toy_csv, tmp_path / "r", epochs=1, pretrain_epochs=2, baseline=False),
                       log=lambda m: None)
    rows = run.metrics["pretrain"]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["loss"] < rows[0]["loss"]
    with pytest.raises(rnnkit.RnnkitError, match="pretrain_epochs"):
        rnnkit.Config(pretrain_epochs=-1).validate()
