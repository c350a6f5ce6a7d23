import pytest
import torch
from torch import nn

from rnnkit.errors import RnnkitError
from rnnkit.model import SequenceClassifier, column_gather, make_rnn


def build(**kw):
    torch.manual_seed(0)
    args = dict(vocab_size=20, num_classes=3, embedding_dim=8, hidden_size=12, head_hidden=10,
                embedding_dropout=0.0, head_dropout=0.0)
    args.update(kw)
    return SequenceClassifier(**args).eval()


def batch():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([5, 2, 7, 1])
    ids = torch.randint(4, 20, (4, 7), generator=g)
    ids[torch.arange(7)[None, :] >= lengths[:, None]] = 0
    return ids, lengths


def test_column_gather_picks_last_valid_step():
    out = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    got = column_gather(out, torch.tensor([2, 4]))
    assert torch.equal(got, torch.stack([out[0, 1], out[1, 3]]))


@pytest.mark.parametrize("pooling", ["last", "max", "mean", "maxmean", "attention"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_extra_padding_never_changes_the_logits(pooling, cell, bidirectional):
    model = build(pooling=pooling, cell=cell, bidirectional=bidirectional)
    ids, lengths = batch()
    with torch.no_grad():
        a = model(ids, lengths)
        b = model(torch.cat([ids, torch.zeros(4, 5, dtype=ids.dtype)], 1), lengths)
        alone = model(ids[1:2, :2], lengths[1:2])
    assert a.shape == (4, 3)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch.testing.assert_close(a[1:2], alone, atol=1e-6, rtol=0)


def test_last_pooling_is_the_book_column_gather_for_unidirectional():
    model = build(pooling="last", cell="gru", bidirectional=False)
    ids, lengths = batch()
    with torch.no_grad():
        x = model.embedding(ids)
        out, _ = model.rnn(x)  # unpacked: positions past the end are garbage but unused
        expected = column_gather(out, lengths)
        assert torch.allclose(model.encode(ids, lengths), expected, atol=1e-6)


def test_dropout_only_in_training_mode():
    model = build(embedding_dropout=0.5, head_dropout=0.5)
    ids, lengths = batch()
    model.train()
    assert not torch.equal(model(ids, lengths), model(ids, lengths))
    model.eval()
    assert torch.equal(model(ids, lengths), model(ids, lengths))


def test_token_dropout_drops_whole_token_vectors_at_its_rate():
    from rnnkit.model import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.25, whole_vectors=True).train()
    out = drop(torch.ones(64, 50, 16))
    per_token = out.amax(-1)
    # every token's vector is either gone entirely or kept entirely (scaled by 1 / (1 - p))
    assert torch.equal(out, per_token[..., None].expand_as(out))
    assert per_token.unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    assert abs(float((per_token == 0).float().mean()) - 0.25) < 0.02
    assert torch.equal(drop.eval()(out), out)
    model = build(token_dropout=0.5).train()
    ids, lengths = batch()
    assert not torch.equal(model(ids, lengths), model(ids, lengths))


def test_locked_dropout_keeps_one_mask_per_row_and_feature_over_all_steps():
    from rnnkit.model import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.3, locked=True).train()
    out = drop(torch.ones(64, 50, 16))
    assert torch.equal(out, out[:, :1].expand_as(out)), "every step of a row reads the same mask"
    assert not torch.equal(out[0], out[1]), "each row draws its own"
    assert out.unique().tolist() == pytest.approx([0.0, 1 / 0.7])
    assert abs(float((out[:, 0] == 0).float().mean()) - 0.3) < 0.03
    assert drop(torch.ones(8, 16)).shape == (8, 16), "a (B, F) input is dropped per element"
    assert torch.equal(drop.eval()(out), out)


def test_locked_dropout_acts_on_the_embeddings_and_between_layers_only_in_training():
    model = build(num_layers=2, rnn_dropout=0.5, embedding_dropout=0.5, locked_dropout=True)
    seen = []
    model.between_layers.register_forward_hook(lambda m, inp, out: seen.append((inp[0], out)))
    ids, lengths = batch()
    model.train()
    torch.manual_seed(3)
    model(ids, lengths)
    layer_in, layer_out = seen.pop()
    kept = (layer_out != 0) | (layer_in == 0)
    assert torch.equal(kept, kept[:, :1].expand_as(kept)), "the layer-2 input keeps one mask over time"
    assert not kept.all()
    model.eval()
    with torch.no_grad():
        a = model(ids, lengths)
        b = build(num_layers=2, rnn_dropout=0.5, embedding_dropout=0.5)(ids, lengths)
    assert not seen, "no dropout at inference"
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    with pytest.raises(RnnkitError, match="locked_dropout between stacked layers needs a padded kernel"):
        build(num_layers=2, rnn_dropout=0.5, locked_dropout=True, kernel="packed")
    assert build(num_layers=1, rnn_dropout=0.5, locked_dropout=True).between_layers is None


def test_inter_layer_dropout_is_not_passed_to_a_single_layer():
    rnn = make_rnn("lstm", "torch", 4, 4, num_layers=1, dropout=0.5)
    assert rnn.dropout == 0.0
    assert make_rnn("lstm", "torch", 4, 4, num_layers=2, dropout=0.5).dropout == 0.5


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_scratch_and_torch_backends_share_weights_and_outputs(cell):
    fused = build(cell=cell, backend="torch", num_layers=2, pooling="attention")
    scratch = build(cell=cell, backend="scratch", num_layers=2, pooling="attention")
    scratch.load_state_dict(fused.state_dict())
    ids, lengths = batch()
    with torch.no_grad():
        torch.testing.assert_close(scratch(ids, lengths), fused(ids, lengths), atol=1e-5, rtol=1e-5)


def test_ngram_embedding_hashes_each_ngram_to_one_row_and_keeps_padding_out():
    from rnnkit.model import NgramEmbedding

    emb = NgramEmbedding(order=3, buckets=97, dim=4)
    ids = torch.tensor([[5, 6, 7, 5, 6, 7], [9, 5, 6, 7, 0, 0]])
    out = emb(ids)
    assert out.shape == (2, 6, 4)
    # The same trigram (5, 6, 7) and bigram (6, 7) give the same vector wherever they occur.
    torch.testing.assert_close(out[0, 2], out[0, 5])
    torch.testing.assert_close(out[0, 2], out[1, 3])
    assert not torch.allclose(out[0, 2], out[0, 1])
    # Changing the token two steps back changes the trigram, not the bigram.
    assert emb(torch.tensor([[1, 6, 7]]))[0, 2].ne(emb(torch.tensor([[2, 6, 7]]))[0, 2]).any()


@pytest.mark.parametrize("kernel", ["native", "fused"])
def test_ngram_features_keep_padded_equal_to_packed_and_padding_inert(kernel):
    torch.manual_seed(0)
    ids = torch.randint(1, 30, (5, 9))
    lengths = torch.tensor([9, 3, 6, 1, 4])
    ids[torch.arange(9)[None, :] >= lengths[:, None]] = 0
    outs = {}
    for k in ("packed", kernel):
        torch.manual_seed(0)
        model = SequenceClassifier(30, 3, cell="gru", embedding_dim=6, hidden_size=5, pooling="maxmean",
                                   embedding_dropout=0.0, head_dropout=0.0, kernel=k, ngram_order=3,
                                   ngram_buckets=50).eval()
        outs[k] = model(ids, lengths)
        wider = model(torch.cat([ids, torch.zeros(5, 3, dtype=ids.dtype)], 1), lengths)
        torch.testing.assert_close(wider, outs[k], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[kernel], outs["packed"], rtol=1e-5, atol=1e-5)
    assert "ngrams.table.weight" in model.state_dict()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_projection_weights_move_between_backends(bidirectional):
    """proj_size: torch's parameter names (weight_hr_l0[_reverse]) on both backends, so a
    state dict trained on either loads into the other; the head reads proj_size-wide outputs."""
    kw = dict(cell="lstm", proj_size=4, num_layers=2, bidirectional=bidirectional, pooling="maxmean")
    fused, scratch = build(backend="torch", **kw), build(backend="scratch", **kw)
    assert list(fused.state_dict()) == list(scratch.state_dict())
    assert "rnn.weight_hr_l1" in fused.state_dict()
    assert ("rnn.weight_hr_l0_reverse" in fused.state_dict()) == bidirectional
    assert fused.fc1.in_features == 2 * 4 * (2 if bidirectional else 1)
    ids, lengths = batch()
    for src, dst in ((fused, scratch), (scratch, build(backend="torch", **kw))):
        dst.load_state_dict(src.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(dst(ids, lengths), src(ids, lengths), atol=1e-5, rtol=1e-5)


def test_make_rnn_projections_only_for_lstm():
    assert make_rnn("lstm", "scratch", 4, 8, proj_size=3).weight_hr_l0.shape == (3, 8)
    assert make_rnn("lstm", "torch", 4, 8, proj_size=3).proj_size == 3
    for cell in ("rnn", "gru"):
        with pytest.raises(RnnkitError, match="cell=lstm only"):
            make_rnn(cell, "torch", 4, 8, proj_size=3)


def test_logit_adjusted_loss_leaves_the_class_prior_out_of_the_logits():
    from rnnkit.model import LogitAdjustedLoss, loss_function

    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 0, 1])
    shift = torch.tensor([-0.1, -1.0, -2.0])
    assert torch.allclose(LogitAdjustedLoss(shift, 0.1)(logits, y),
                          nn.functional.cross_entropy(logits + shift, y, label_smoothing=0.1))
    assert type(loss_function("softmax", False, 0.1)) is nn.CrossEntropyLoss
    # Nine texts of class 0 for one of class 1, all alike: plain cross-entropy learns the 0.9 / 0.1 prior;
    # at tau = 1 (shift = log prior) the learned logits hold no prior at all.
    y = torch.tensor([0] * 9 + [1])
    prior = torch.tensor([0.9, 0.1])
    for tau, expected in ((0.0, prior), (1.0, torch.tensor([0.5, 0.5]))):
        f = torch.zeros(2, requires_grad=True)
        opt = torch.optim.LBFGS([f], max_iter=200)
        loss_fn = LogitAdjustedLoss(tau * prior.log())

        def closure():
            opt.zero_grad()
            loss = loss_fn(f.expand(10, 2), y)
            loss.backward()
            return loss

        opt.step(closure)
        assert torch.allclose(f.softmax(0), expected, atol=1e-3)


# --- the character branch (char_branch) ----------------------------------------------------------

SEP = 3  # <chars>'s id in these tests


def branch_batch():
    """Rows of words, <chars>, characters; one row without <chars>; one whose word part reads like <chars>."""
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([9, 4, 6, 2, 8])
    ids = torch.randint(4, 20, (5, 9), generator=g)
    ids[0, 5], ids[1, 1], ids[3, 1], ids[4, 2], ids[4, 4] = SEP, SEP, SEP, SEP, SEP  # row 2: none; row 3: no chars
    ids[torch.arange(9)[None, :] >= lengths[:, None]] = 0
    return ids, lengths


@pytest.mark.parametrize("pooling,num_layers", [("maxmean", 2), ("last", 1), ("attention", 1)])
def test_char_branch_reads_each_row_as_if_alone_whatever_the_padding(pooling, num_layers):
    model = build(pooling=pooling, num_layers=num_layers, char_branch=6, char_separator=SEP)
    ids, lengths = branch_batch()
    with torch.no_grad():
        a = model(ids, lengths)
        padded = model(torch.cat([ids, torch.zeros(5, 4, dtype=ids.dtype)], 1), lengths)
        alone = torch.cat([model(ids[i:i + 1, :n], lengths[i:i + 1]) for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(a, padded, atol=1e-6, rtol=0)
    torch.testing.assert_close(a, alone, atol=1e-6, rtol=0)
    assert model.fc1.in_features == (4 if pooling == "maxmean" else 2) * 12 + 4 * 6


def test_char_branch_splits_at_the_last_separator_and_each_part_reads_its_own_table():
    model = build(pooling="maxmean", char_branch=6, char_separator=SEP)
    ids, lengths = branch_batch()
    word_len, start, char_len = model.split(ids, lengths)
    # row 2 has no <chars>: all words, no characters; row 3 ends at its <chars>; row 4 splits at its second one
    assert word_len.tolist() == [5, 1, 6, 1, 4] and start.tolist() == [6, 2, 6, 2, 5]
    assert char_len.tolist() == [3, 2, 0, 0, 3]
    model.train()
    x = model.embed(ids).detach().requires_grad_(True)
    assert x.shape == (5, 9, 8 + 6)
    model(ids, lengths, embedded=x).sum().backward()
    g = x.grad
    for row, (w, s, c) in enumerate(zip(word_len.tolist(), start.tolist(), char_len.tolist())):
        assert g[row, w:, :8].abs().sum() == 0 and g[row, :s, 8:].abs().sum() == 0  # each table only on its part
        assert g[row, :w, :8].abs().sum() > 0
        assert (g[row, s:s + c, 8:].abs().sum() > 0) == (c > 0)


def test_rows_bucket_by_their_word_part_plus_a_tenth_of_their_characters():
    from rnnkit.model import CHAR_STEP_COST
    from rnnkit.predict import predict_logits

    model = build(pooling="maxmean", char_branch=6, char_separator=SEP)
    ids, lengths = branch_batch()
    key = model.bucket_lengths(ids, lengths, chunk=2)  # chunks of 2: the pieces join in row order
    torch.testing.assert_close(key, torch.tensor([5, 1, 6, 1, 4]) + CHAR_STEP_COST * torch.tensor([3., 2, 0, 0, 3]))
    assert torch.equal(build(pooling="max").bucket_lengths(ids, lengths), lengths)
    # Sorted by that key, evaluation still returns each row's own logits in input order.
    with torch.no_grad():
        alone = torch.cat([model(ids[i:i + 1, :n], lengths[i:i + 1]) for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(predict_logits(model, ids, lengths, batch_size=2), alone, atol=1e-6, rtol=0)


def test_char_branch_traces_to_a_graph_equal_at_other_lengths():
    from rnnkit.export import PaddedClassifier

    model = build(pooling="maxmean", num_layers=2, char_branch=6, char_separator=SEP)
    ids, lengths = branch_batch()
    with torch.no_grad():
        traced = torch.jit.trace(PaddedClassifier(model).eval(), (ids, lengths), check_trace=False)
        for rows in (slice(0, 5), slice(1, 3)):
            sub_ids, sub_len = ids[rows, : int(lengths[rows].max())], lengths[rows]
            expected = model.probabilities(model(sub_ids, sub_len))
            torch.testing.assert_close(traced(sub_ids, sub_len), expected, atol=1e-6, rtol=0)


def test_adversarial_move_can_be_kept_to_the_word_table():
    from rnnkit.trainer import adversarial_step

    torch.manual_seed(0)
    full = torch.randn(3, 5, 10, requires_grad=True)
    (full[..., :7] ** 3).sum().backward()
    lengths = torch.tensor([5, 3, 1])
    words = full.detach()[..., :7].clone().requires_grad_(True)
    words.grad = full.grad[..., :7].clone()
    step = adversarial_step(full, lengths, 0.5, features=7)
    assert step.shape == full.shape and step[..., 7:].abs().sum() == 0
    torch.testing.assert_close(step[..., :7], adversarial_step(words, lengths, 0.5))
