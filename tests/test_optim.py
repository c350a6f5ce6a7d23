"""RowAdam: row-wise embedding updates that give dense Adam(W)'s result."""
import pytest
import torch
from torch import nn

from rnnkit.optim import RowAdam


def twin_embeddings(rows=60, dim=8, weight_decay=0.0, padding_idx=0):
    """An embedding trained by RowAdam and its dense twin trained by torch's Adam or AdamW."""
    torch.manual_seed(0)
    sparse = nn.Embedding(rows, dim, sparse=True, padding_idx=padding_idx)
    dense = nn.Embedding(rows, dim, padding_idx=padding_idx)
    dense.load_state_dict(sparse.state_dict())
    row_adam = RowAdam(sparse.parameters(), lr=1e-2, weight_decay=weight_decay)
    row_adam.attach(sparse)
    kind = torch.optim.AdamW if weight_decay else torch.optim.Adam
    return sparse, row_adam, dense, kind(dense.parameters(), lr=1e-2, weight_decay=weight_decay)


def train_both(pairs, steps, rows=60, seed=1):
    """Steps on batches where most rows go unused for long stretches and the loss depends on the
    weights, so a row read before its missed updates were applied would show at once."""
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        high = rows if step % 11 == 0 else rows // 3
        ids = torch.randint(0, high, (4, 3), generator=gen)
        target = torch.randn(4, 3, pairs[0][0].embedding_dim, generator=gen)
        for emb, opt in pairs:
            opt.zero_grad()
            ((emb(ids) - target) ** 2).sum().backward()
            opt.step()
        if step % 100 == 99:  # a schedule: missed steps must use the learning rate of their own step
            for _, opt in pairs:
                for group in opt.param_groups:
                    group["lr"] *= 0.5


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_row_adam_equals_dense_adam_and_adamw(weight_decay):
    sparse, row_adam, dense, adam = twin_embeddings(weight_decay=weight_decay)
    start = dense.weight.detach().clone()
    train_both([(sparse, row_adam), (dense, adam)], 400)
    row_adam.flush()
    assert (dense.weight - start).abs().max() > 0.5  # it trained
    torch.testing.assert_close(sparse.weight, dense.weight, atol=1e-4, rtol=0)
    ours, theirs = row_adam.state_dict()["state"][0], adam.state_dict()["state"][0]
    assert set(ours) == {"step", "exp_avg", "exp_avg_sq"}  # torch's layout, no bookkeeping
    assert float(ours["step"]) == float(theirs["step"]) == 400
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-5, rtol=1e-4)


def test_rows_are_brought_up_to_date_before_a_forward_reads_them():
    sparse, row_adam, dense, adam = twin_embeddings()
    train_both([(sparse, row_adam), (dense, adam)], 30)
    ids = torch.tensor([[45, 50, 3]])  # rows the last steps did not use
    torch.testing.assert_close(sparse(ids), dense(ids), atol=1e-5, rtol=0)
    assert (sparse.weight[45] - dense.weight[45]).abs().max() < 1e-5
    # a row nothing looked up is behind until flush() brings every row up to date
    behind = (sparse.weight - dense.weight).abs().amax(1) > 1e-4
    unused = next(r for r in range(20, 60) if r not in (45, 50) and behind[r])
    row_adam.flush()
    torch.testing.assert_close(sparse.weight[unused], dense.weight[unused], atol=1e-5, rtol=0)


def test_the_gradient_arrives_with_repeated_rows_summed():
    emb = nn.Embedding(10, 4, sparse=True)
    twin = nn.Embedding(10, 4)
    twin.load_state_dict(emb.state_dict())
    opt = RowAdam(emb.parameters())
    opt.attach(emb)
    for e in (emb, twin):
        (e(torch.tensor([[7, 1, 7, 3, 1, 7]])) * torch.arange(1.0, 5.0)).sum().backward()
    assert emb.weight.grad.is_coalesced() and emb.weight.grad._nnz() == 3
    torch.testing.assert_close(emb.weight.grad.to_dense(), twin.weight.grad)


def test_a_checkpoint_loads_into_torch_adam_and_back():
    sparse, row_adam, dense, adam = twin_embeddings()
    train_both([(sparse, row_adam), (dense, adam)], 50)
    state = row_adam.state_dict()
    other = torch.optim.Adam([nn.Parameter(sparse.weight.detach().clone())], lr=1e-2)
    other.load_state_dict(state)  # the layout and sizes torch's Adam expects
    again = RowAdam(sparse.parameters(), lr=1e-2)
    again.attach(sparse)
    again.load_state_dict(state)
    train_both([(sparse, again), (dense, adam)], 50, seed=2)
    again.flush()
    torch.testing.assert_close(sparse.weight, dense.weight, atol=1e-4, rtol=0)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="invalid lr"):
        RowAdam([nn.Parameter(torch.zeros(3, 2))], lr=-1)
    with pytest.raises(ValueError, match=r"takes \(rows, dim\) parameters"):
        RowAdam([nn.Parameter(torch.zeros(3))])
    emb = nn.Embedding(5, 2, sparse=True)
    opt = RowAdam(emb.parameters(), lr=1.0, weight_decay=0.5)
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(ValueError, match="too large"):
        opt.step()


def test_long_runs_keep_only_the_terms_that_still_count():
    # With b1 = 0.5 a missed step's terms fade below float64's reach after about 1,000 steps, so the
    # table's update covers only those; 1,200 steps (rows unused for 50 at a time) must still match AdamW.
    torch.manual_seed(0)
    sparse = nn.Embedding(40, 4, sparse=True)
    dense = nn.Embedding(40, 4)
    dense.load_state_dict(sparse.state_dict())
    row_adam = RowAdam(sparse.parameters(), lr=1e-2, betas=(0.5, 0.999), weight_decay=0.01)
    row_adam.attach(sparse)
    adamw = torch.optim.AdamW(dense.parameters(), lr=1e-2, betas=(0.5, 0.999), weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    for step in range(1200):
        ids = torch.randint(0, 40 if step % 50 == 0 else 5, (2, 3), generator=gen)
        target = torch.randn(2, 3, 4, generator=gen)
        for emb, opt in ((sparse, row_adam), (dense, adamw)):
            opt.zero_grad()
            ((emb(ids) - target) ** 2).sum().backward()
            opt.step()
    row_adam.flush()
    # 6e-5 apart after 1,500 steps when measured; as large with b1 = 0, where nothing is deferred but the
    # decay, so it is the rounding of AdamW's fp32 product of decay factors against RowAdam's float64 one
    torch.testing.assert_close(sparse.weight, dense.weight, atol=3e-4, rtol=0)
