"""Experiment (not an rnnkit feature): a separate syllable encoder beside the kiwi morphemes on NSMC.

    python benchmarks/nsmc_syllable_encoder.py --encoder cnn --data-dir ../shared/data \
        --work .bench_data/nsmc_kiwi_syl --variants '{"max_len": 300, "num_layers": 1, "seed": 0}'

It runs ``benchmarks/nsmc_tuning.py --syllables``, whose files hold each review's morphemes, a
separator, then its syllables in one sequence, and splits that sequence inside the model:

* ``--encoder off``: the main encoder reads the morphemes only (the reference on the same files);
* ``--encoder lstm``: plus a one-layer BiLSTM over the syllables (its own embedding table), max and
  mean pooled, whose features join the main encoder's pooled ones before the head;
* ``--encoder cnn``: plus convolutions of widths 2-4 over the syllables, max pooled (a char-CNN).

``--branch-once`` makes the branch cheaper under adversarial training (the NSMC default): the moved
pass, whose move touches the morpheme embeddings only, reuses the clean pass's syllable features
without their graph, so the branch runs forward and backward once per batch instead of twice.

rnnkit's own classes are patched here (the model's constructor and ``trainer.prepare``, which gives
the separator's id), so nothing of this ships with rnnkit: BENCHMARKS.md (issue 13, "What was tried")
says why it was not built in. Results are appended to ``--results``.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Set before torch loads (rnnkit sets it on import otherwise; here torch comes first).
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import nsmc_tuning  # noqa: E402
import rnnkit.trainer as trainer  # noqa: E402
from rnnkit import model as M  # noqa: E402
from rnnkit.padded import pool, run_padded  # noqa: E402

parser = argparse.ArgumentParser(add_help=False)
parser.add_argument("--encoder", choices=("off", "lstm", "cnn"), required=True)
parser.add_argument("--syl-dim", type=int, default=None, help="syllable embedding size (lstm 96, cnn 64)")
parser.add_argument("--syl-width", type=int, default=None, help="LSTM hidden size or filters per width (96, 128)")
parser.add_argument("--syl-dropout", type=float, default=0.3)
parser.add_argument("--branch-once", action="store_true",
                    help="under adversarial training, give the moved pass the clean pass's syllable features, "
                         "detached (the move only touches the morphemes): one branch pass per batch, not two")
parser.add_argument("--results", default="benchmarks/results/nsmc-syllable-encoder.json")
ARGS, REST = parser.parse_known_args()
MODE = ARGS.encoder
E2 = ARGS.syl_dim or (96 if MODE == "lstm" else 64)
H2 = ARGS.syl_width or (96 if MODE == "lstm" else 128)
WIDTHS = (2, 3, 4)
SEPARATOR_ID = {}

_prepare = trainer.prepare


def prepare(*args, **kwargs):
    out = _prepare(*args, **kwargs)
    SEPARATOR_ID["id"] = out[1].vocab.index(nsmc_tuning.SEPARATOR)
    return out


class WithSyllables(M.SequenceClassifier):
    def add_branch(self, vocab_size: int) -> None:
        self.separator = SEPARATOR_ID["id"]
        if MODE != "off":
            self.syl_embedding = nn.Embedding(vocab_size, E2, padding_idx=0)
            self.syl_dropout = M.Dropout(ARGS.syl_dropout)
        if MODE == "lstm":
            self.syl_rnn = nn.LSTM(E2, H2, batch_first=True, bidirectional=True)
        if MODE == "cnn":
            self.syl_convs = nn.ModuleList(nn.Conv1d(E2, H2, k, padding=k - 1) for k in WIDTHS)

    def split(self, ids, lengths):
        """Morpheme lengths (up to the separator), the separator's position, syllable lengths (with <eos>)."""
        lengths = lengths.to(ids.device)
        is_sep = ids == self.separator
        sep_pos = torch.where(is_sep.any(1), is_sep.int().argmax(1), lengths)
        return sep_pos.clamp_min(1), sep_pos, (lengths - sep_pos - 1).clamp_min(1)

    def encode(self, ids, lengths, embedded=None):
        mlen = self.split(ids, lengths)[0]
        tm = int(mlen.max())
        return super().encode(ids[:, :tm], mlen, None if embedded is None else embedded[:, :tm])

    def syllable_features(self, ids, lengths):
        # The trainer's moved pass reuses the clean pass's ids tensor; with --branch-once it gets the clean
        # pass's features (same dropout draw) without their graph, so the branch learns from the clean loss only.
        cached = getattr(self, "_once", None)
        if ARGS.branch_once and self.training and cached is not None and cached[0] is ids:
            return cached[1]
        out = self._syllable_features(ids, lengths)
        if ARGS.branch_once and self.training:
            self._once = (ids, out.detach())
        return out

    def _syllable_features(self, ids, lengths):
        _, sep_pos, slen = self.split(ids, lengths)
        steps = torch.arange(int(slen.max()), device=ids.device)
        idx = (sep_pos.unsqueeze(1) + 1 + steps).clamp(max=ids.shape[1] - 1)
        x = self.syl_dropout(self.syl_embedding(ids.gather(1, idx) * (steps < slen.unsqueeze(1))))
        if MODE == "lstm":
            return pool(run_padded(self.syl_rnn, x, slen, self.kernel), slen, "maxmean")
        x, feats = x.transpose(1, 2), []
        for k, conv in zip(WIDTHS, self.syl_convs):
            y = conv(x)  # (B, H2, Ts + k - 1): output j covers syllables j-k+1..j
            j = torch.arange(y.shape[2], device=y.device)
            y = y.masked_fill((j >= (slen + k - 1).unsqueeze(1)).unsqueeze(1), float("-inf"))
            feats.append(torch.relu(y.amax(2)))
        return torch.cat(feats, dim=1)


def from_config(cls, cfg, vocab_size, num_classes, multilabel=False, text_vectors=None, char_separator=-1):
    extra = {"off": 0, "lstm": 4 * H2, "cnn": len(WIDTHS) * H2}[MODE]
    model = WithSyllables(vocab_size, num_classes, kernel=cfg.kernel, multilabel=multilabel, text_vector_dim=extra,
                          **{k: getattr(cfg, k) for k in M.MODEL_KEYS})
    model.add_branch(vocab_size)
    if extra:  # the head reads the branch's features through the text-vector hook, beside the pooled ones
        model.text_vectors = model.syllable_features
    return model


if __name__ == "__main__":
    trainer.prepare = prepare
    M.SequenceClassifier.from_config = classmethod(from_config)
    nsmc_tuning.RESULTS = Path(ARGS.results)
    _run_variant = nsmc_tuning.run_variant

    def run_variant(work, overrides):
        row = _run_variant(work, overrides)
        row["syllable_encoder"] = ({"encoder": MODE} if MODE == "off" else
                                   {"encoder": MODE, "dim": E2, "width": H2, "dropout": ARGS.syl_dropout,
                                    **({"branch_once": True} if ARGS.branch_once else {})})
        row["command"] = "benchmarks/nsmc_syllable_encoder.py " + " ".join(COMMAND)
        return row

    nsmc_tuning.run_variant = run_variant
    COMMAND = sys.argv[1:]
    sys.argv = [sys.argv[0], *REST, "--syllables"]
    nsmc_tuning.main()
