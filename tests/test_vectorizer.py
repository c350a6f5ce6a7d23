import pytest
import torch

from rnnkit.errors import RnnkitError
from rnnkit.tokenizers import CharTokenizer
from rnnkit.vectorizer import BatchSampler, EncodedSplit, Vectorizer


def fit(**kw):
    return Vectorizer.fit(["abc", "ab", "b"], ["x", "y", "x"], CharTokenizer(), **kw)


def test_encode_pads_with_zero_and_wraps_in_bos_eos():
    v = fit()
    ids, lengths = v.encode_texts(["ab", "abcz"])
    assert lengths.tolist() == [4, 6]
    bos, eos = v.vocab.bos_index, v.vocab.eos_index
    assert ids[0].tolist() == [bos, v.vocab.index("a"), v.vocab.index("b"), eos, 0, 0]
    assert ids[1, 4].item() == v.vocab.unk_index  # 'z' unseen in training


def test_max_len_truncates_before_the_markers():
    v = fit(max_len=2, add_bos_eos=False)
    ids, lengths = v.encode_texts(["abcabc"])
    assert lengths.tolist() == [2]


def test_unknown_label_and_empty_text_are_errors():
    v = fit()
    with pytest.raises(RnnkitError, match="label 'z' .*not seen in training; known labels: x, y"):
        v.encode_labels(["x", "z"], "test.csv")
    with pytest.raises(RnnkitError, match="text #2 is empty"):
        v.encode_texts(["a", ""])


def test_display_names_and_round_trip():
    v = Vectorizer.fit(["a", "b"], ["0", "1"], CharTokenizer(), label_names={"0": "negative", "1": "positive"})
    assert v.class_names == ["negative", "positive"]
    assert v.encode_labels(["positive", "0"]).tolist() == [1, 0]
    w = Vectorizer.from_dict(v.to_dict())
    assert w.encode_texts(["ab"])[0].tolist() == v.encode_texts(["ab"])[0].tolist()
    assert w.class_names == v.class_names


def test_single_label_training_data_is_rejected():
    with pytest.raises(RnnkitError, match="at least 2"):
        Vectorizer.fit(["a", "b"], ["x", "x"], CharTokenizer())


def test_batch_trims_to_longest_member():
    split = EncodedSplit(torch.tensor([[5, 6, 0, 0], [5, 0, 0, 0], [5, 6, 7, 8]], dtype=torch.int32),
                         torch.tensor([2, 1, 4]), torch.tensor([0, 1, 0]))
    ids, lengths, y = split.batch(torch.tensor([0, 1]))
    assert ids.shape == (2, 2) and ids.dtype == torch.int64 and y.tolist() == [0, 1]


def test_sampler_is_seeded_per_epoch_and_covers_everything():
    lengths = torch.randint(1, 50, (1000,), generator=torch.Generator().manual_seed(0))
    s = BatchSampler(lengths, 32, seed=1)
    s.set_epoch(1)
    a = [b.tolist() for b in s]
    s.set_epoch(2)
    b = [b.tolist() for b in s]
    s.set_epoch(1)
    assert [x.tolist() for x in s] == a and a != b
    assert sorted(i for batch in a for i in batch) == list(range(1000))


def test_bucketing_cuts_padding():
    lengths = torch.randint(1, 100, (5000,), generator=torch.Generator().manual_seed(0))

    def padded_cells(bucket):
        s = BatchSampler(lengths, 64, bucket=bucket, seed=0)
        return sum(int(lengths[b].max()) * len(b) for b in s)

    assert padded_cells(True) < 0.6 * padded_cells(False)
