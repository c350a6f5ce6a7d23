"""Language-model pretraining of the encoder on the training texts, labels unused.

Before the classifier trains, its embedding and recurrent layers learn to predict text:
the forward direction's output at step ``t`` predicts token ``t + 1``, the backward
direction's predicts token ``t - 1`` (ELMo's two language models, here the two halves of
one bidirectional layer; a unidirectional encoder trains the forward one only). This is
the in-domain step of ULMFiT: the encoder starts from what the texts say before it learns
what the labels want. The heads are dropped afterwards; only the encoder's weights carry
over (``Config.pretrain_epochs``).

Predicting one token out of tens of thousands is the expensive part, so large vocabularies
use torch's adaptive softmax (frequent tokens in a full-size head, rare ones in
smaller clusters; the vocabulary is already ordered most frequent first).
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional

import torch
from torch import nn

from .model import SequenceClassifier, rnn_output_width, valid_mask
from .predict import autocast
from .vectorizer import BatchSampler, EncodedSplit

# Tokens below the first cutoff get the full head; the rest fall into clusters 4x and 16x narrower.
CUTOFFS = (2000, 10000)


class LanguageModelHeads(nn.Module):
    """Next-token (and, when bidirectional, previous-token) predictors over the encoder's outputs."""

    def __init__(self, hidden_size: int, vocab_size: int, bidirectional: bool):
        super().__init__()
        self.hidden_size = hidden_size
        self.heads = nn.ModuleList(self._head(hidden_size, vocab_size) for _ in range(2 if bidirectional else 1))

    @staticmethod
    def _head(hidden_size: int, vocab_size: int) -> nn.Module:
        cutoffs = [c for c in CUTOFFS if c < vocab_size - 1]
        if not cutoffs or hidden_size < 64:  # the clusters' projections would be a few units wide
            return nn.Linear(hidden_size, vocab_size)
        return nn.AdaptiveLogSoftmaxWithLoss(hidden_size, vocab_size, cutoffs, div_value=4.0)

    def loss(self, out: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Mean negative log-likelihood over all predicted tokens, and their count.

        ``out (B, T, D*H)``: encoder outputs, ``ids (B, T)``, ``lengths (B,)``.
        """
        T = ids.shape[1]
        mask = valid_mask(lengths, T, ids.device)
        total, count = out.new_zeros((), dtype=torch.float32), 0
        for d, head in enumerate(self.heads):
            h = out[..., d * self.hidden_size:(d + 1) * self.hidden_size]
            if d == 0:   # step t predicts t + 1
                h, target, keep = h[:, :-1], ids[:, 1:], mask[:, 1:]
            else:        # step t predicts t - 1
                h, target, keep = h[:, 1:], ids[:, :-1], mask[:, 1:]
            h, target = h[keep], target[keep].long()
            if isinstance(head, nn.AdaptiveLogSoftmaxWithLoss):
                # torch's adaptive softmax mixes dtypes under autocast (index_copy_ fails): run it in fp32.
                with torch.autocast(h.device.type, enabled=False):
                    nll = head(h.float(), target).loss * len(target)
            else:
                nll = nn.functional.cross_entropy(head(h).float(), target, reduction="sum")
            total = total + nll
            count += len(target)
        return total / max(count, 1), count


def pretrain(model: SequenceClassifier, split: EncodedSplit, epochs: int, batch_size: int, lr: float,
             seed: int, device: torch.device, amp: Optional[torch.dtype] = None, clip_grad: Optional[float] = 1.0,
             progress: bool = True, log: Callable[[str], None] = lambda m: None,
             embedding_lr: Optional[float] = None) -> list[dict]:
    """Train ``model``'s embedding and recurrent layers as language models on ``split``; return the history.

    ``embedding_lr``: the embedding table's own peak rate (the run's ``embedding_lr``), else ``lr``.

    The head of the classifier is untouched. Uses fused Adam at ``lr`` with a linear decay
    to zero over the pretraining steps, and the model's own embedding dropout.
    """
    from tqdm.auto import tqdm

    from .trainer import clip_grad_norm, fastest_optimizer

    # Each direction's outputs are proj_size wide for an LSTM with projections.
    heads = LanguageModelHeads(rnn_output_width(model.rnn), model.embedding.num_embeddings,
                               model.rnn.bidirectional).to(device)
    table = model.embedding.weight
    encoder = [p for name, p in model.named_parameters() if name.split(".")[0] in ("embedding", "ngrams", "rnn")
               and (embedding_lr is None or p is not table)]
    params = encoder + list(heads.parameters())
    groups = [{"params": params}]
    if embedding_lr is not None:  # pretrained vectors keep their own, lower rate here too
        groups.append({"params": [table], "lr": embedding_lr})
        params = params + [table]
    optimizer = fastest_optimizer(torch.optim.Adam, groups, lr=lr)
    sampler = BatchSampler(split.lengths, batch_size, shuffle=True, bucket=True, seed=seed + 7919)
    total_steps = max(1, epochs * len(sampler))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / total_steps)
    mixed = autocast(device, amp)
    history = []
    model.train()
    # dense gradients for this dense Adam, whatever the classifier's optimizer asked of the embedding
    sparse, model.embedding.sparse = model.embedding.sparse, False
    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        started, nll_sum, tokens = time.perf_counter(), 0.0, 0
        bar = tqdm(sampler, total=len(sampler), desc=f"pretrain {epoch}/{epochs}", leave=False, unit="batch",
                   disable=None if progress else True, file=sys.stderr)
        for index in bar:
            ids, lengths, _ = split.batch(index)
            ids = ids.to(device, non_blocking=True)
            with mixed:
                out = model.sequence_outputs(ids, lengths)
                loss, count = heads.loss(out, ids, lengths)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad:
                clip_grad_norm(params, clip_grad)
            optimizer.step()
            schedule.step()
            nll_sum += loss.item() * count
            tokens += count
            bar.set_postfix(ppl=f"{torch.tensor(nll_sum / max(tokens, 1)).exp():.0f}", refresh=False)
        bar.close()
        nll = nll_sum / max(tokens, 1)
        row = {"epoch": epoch, "loss": nll, "perplexity": float(torch.tensor(nll).exp()),
               "tokens": tokens, "seconds": time.perf_counter() - started}
        history.append(row)
        log(f"pretrain {epoch:2d}  language-model loss {nll:.4f} (perplexity {row['perplexity']:.0f}) "
            f"over {tokens:,} tokens  {row['seconds']:.1f}s")
    model.zero_grad(set_to_none=True)
    model.embedding.sparse = sparse
    return history
