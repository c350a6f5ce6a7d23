"""Where does each model look? One review explained by a unidirectional and a bidirectional LSTM.

Two LSTMs that differ only in ``bidirectional`` are trained on NSMC, both classifying from
their last state(s) (``pooling="last"``), the study notes' design. A unidirectional model's
last state is written at the last token: whatever it kept of the beginning had to survive
every later step. A bidirectional model has a second last state, the backward pass's,
written at the *first* token. Integrated Gradients (:mod:`rnnkit.explain`) shows the
difference twice: on a few reviews token by token, and on test reviews as the share of
attribution that falls in each fifth of the review.

Full mode needs the NSMC dataset (``--data-dir`` or ``$RNNKIT_DATA_DIR``). Quick mode (the
tests) trains in seconds, offline, on made-up strings whose *first* letter alone decides the
class (a-g, h-n or o-u; the rest is noise): the bidirectional model reads that letter as the
last step of its backward pass, the unidirectional one must carry it to the end.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from . import pyplot, save_figure

# Our own sentences, each turning halfway: the first and the second half pull opposite ways.
REVIEWS = [
    "초반은 지루했는데 후반 반전이 정말 최고였다",
    "배우들 연기는 정말 좋았지만 스토리가 엉망이라 실망했다",
    "기대 안 하고 봤는데 생각보다 재밌네요",
]
STRINGS = ["bvwxyzvwxyzv", "ivwxyzvwxyzv", "qvwxyzvwxyzv"]
FULL = dict(dataset="nsmc", epochs=2, hidden_size=64, embedding_dim=64, sample=300, min_tokens=8, examples=REVIEWS)
QUICK = dict(dataset="first-letter", epochs=3, hidden_size=16, embedding_dim=16, sample=30, min_tokens=5,
             examples=STRINGS)
BINS = 5
ALPHABETS = {"alpha": "abcdefg", "beta": "hijklmn", "gamma": "opqrstu"}


def first_letter_data(n: int, seed: int) -> list[tuple[str, str]]:
    """``(text, label)`` pairs: a class letter, then 5-12 noise letters from v-z."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(list(ALPHABETS))
        rows.append((rng.choice(ALPHABETS[label]) + "".join(rng.choice("vwxyz") for _ in range(rng.randint(5, 12))),
                     label))
    return rows


def train_pair(settings: dict, out: Path, seed: int, data_dir, log) -> dict:
    """The unidirectional and the bidirectional run, equal in everything else."""
    from ..config import Config
    from ..trainer import train

    runs = {}
    synthetic = settings["dataset"] == "first-letter"
    for name, bidirectional in (("unidirectional", False), ("bidirectional", True)):
        same = dict(cell="lstm", bidirectional=bidirectional, pooling="last", hidden_size=settings["hidden_size"],
                    embedding_dim=settings["embedding_dim"], epochs=settings["epochs"], seed=seed, baseline=False,
                    progress=False, pretrain_epochs=0, ngram_order=1, early_stopping=None, adversarial=0.0,
                    out=str(out / name))
        if synthetic:
            cfg = Config(tokenizer="char", lr=1e-2, batch_size=32, **same)
        else:
            cfg = Config.for_dataset(settings["dataset"], data_dir=data_dir, **same)
        log(f"explain: training the {name} LSTM on {settings['dataset']} ({settings['epochs']} epochs)")
        runs[name] = train(cfg, data=first_letter_data(1500, seed) if synthetic else None, log=lambda m: None)
    return runs


def position_profile(run, texts, min_tokens: int, method: str = "ig") -> tuple[list[float], int]:
    """Mean share of |attribution| in each fifth of the text, over texts of at least ``min_tokens``."""
    totals, n = [0.0] * BINS, 0
    for text in texts:
        if len(run.vectorizer.tokenizer(text)) < min_tokens:
            continue
        scores = [abs(s) for _, s in run.explain(text, method=method)[0].tokens]
        mass = sum(scores)
        if len(scores) < min_tokens or mass == 0:
            continue
        for i, s in enumerate(scores):
            totals[min(BINS - 1, i * BINS // len(scores))] += s / mass
        n += 1
    return [t / max(n, 1) for t in totals], n


def run(out: Path, quick: bool = False, seed: int = 0, log=print, data_dir=None) -> dict:
    from ..errors import RnnkitError

    settings = QUICK if quick else FULL
    # The two runs are means to this page, not results: trained in a scratch folder, deleted after.
    scratch = Path(tempfile.mkdtemp(prefix="rnnkit-lab-explain-"))
    try:
        return _run(settings, scratch, seed, data_dir, log, out)
    except RnnkitError as exc:
        if settings["dataset"] == "nsmc":
            raise RnnkitError(f"lab explain trains on NSMC: {exc}. Give --data-dir (or set RNNKIT_DATA_DIR), "
                              "or use --quick (made-up data, offline)") from None
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(settings: dict, scratch: Path, seed: int, data_dir, log, out: Path) -> dict:
    from ..data import load_dataset

    runs = train_pair(settings, scratch, seed, data_dir, log)
    import random

    if settings["dataset"] == "first-letter":
        texts = [t for t, _ in first_letter_data(settings["sample"], seed + 1)]
    else:
        texts = load_dataset(settings["dataset"], data_dir, seed=seed, progress=False)["test"].texts
    sample = random.Random(seed).sample(texts, min(len(texts), settings["sample"]))
    examples, profiles, occluded, accuracy = [], {}, {}, {}
    for name, r in runs.items():
        accuracy[name] = round(r.metrics["test"]["accuracy"], 4)
        profiles[name], used = position_profile(r, sample, settings["min_tokens"])
        # The same profile by occlusion: where the two methods agree, it is the model, not the method.
        occluded[name], _ = position_profile(r, sample, settings["min_tokens"], "occlusion")
        log(f"explain: {name}: test accuracy {accuracy[name]:.4f}; attribution share by fifth of the text "
            f"({used} texts), IG: " + " ".join(f"{p:.2f}" for p in profiles[name])
            + "; occlusion: " + " ".join(f"{p:.2f}" for p in occluded[name]))
    for text in settings["examples"]:
        row = {"text": text}
        for name, r in runs.items():
            e = r.explain(text)[0]
            row[name] = {"label": e.label, "probability": round(e.probability, 4),
                         "tokens": [[t, round(s, 4)] for t, s in e.tokens]}
        examples.append(row)
    figure = _plot(profiles, occluded, examples, out / "explain.png")
    uni, bi = profiles["unidirectional"], profiles["bidirectional"]
    findings = [
        f"Test accuracy: unidirectional {accuracy['unidirectional']:.3f}, bidirectional "
        f"{accuracy['bidirectional']:.3f} (both LSTM {settings['hidden_size']}, last state, "
        f"{settings['epochs']} epochs on {settings['dataset']}).",
        f"Share of IG attribution in the first fifth of a text: unidirectional {uni[0]:.2f}, bidirectional "
        f"{bi[0]:.2f}; in the last fifth: {uni[-1]:.2f} against {bi[-1]:.2f}. By occlusion, first fifth "
        f"{occluded['unidirectional'][0]:.2f} against {occluded['bidirectional'][0]:.2f}, last fifth "
        f"{occluded['unidirectional'][-1]:.2f} against {occluded['bidirectional'][-1]:.2f}.",
    ]
    for row in examples:
        u, b = row["unidirectional"], row["bidirectional"]
        findings.append(f"'{row['text']}': unidirectional {u['label']} {u['probability']:.2f} (strongest: "
                        f"{_strongest(u['tokens'])}); bidirectional {b['label']} {b['probability']:.2f} "
                        f"(strongest: {_strongest(b['tokens'])}).")
    return {"settings": {k: v for k, v in settings.items() if k != "examples"}, "test_accuracy": accuracy,
            "attribution_share_by_fifth": profiles, "occlusion_share_by_fifth": occluded, "examples": examples, "figures": [figure],
            "findings": findings}


def _strongest(tokens, k: int = 3) -> str:
    return ", ".join(f"{t} {s:+.2f}" for t, s in sorted(tokens, key=lambda ts: -abs(ts[1]))[:k])


def _plot(profiles: dict, occluded: dict, examples: list, path: Path) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 1 + len(examples), figsize=(4.2 * (1 + len(examples)), 3.8),
                             constrained_layout=True)
    width = 0.4
    for k, (name, shares) in enumerate(profiles.items()):
        axes[0].bar([i + (k - 0.5) * width for i in range(BINS)], shares, width=width, label=f"{name} (IG)")
        axes[0].plot([i + (k - 0.5) * width for i in range(BINS)], occluded[name], "k^" if k else "kv",
                     label=f"{name} (occlusion)")
    axes[0].set_xticks(range(BINS), ["first", "2nd", "3rd", "4th", "last"])
    axes[0].set_xlabel("fifth of the text")
    axes[0].set_ylabel("mean share of |attribution|")
    axes[0].set_title("Where each model looks")
    axes[0].legend(fontsize=8)
    for ax, row in zip(axes[1:], examples):
        for k, name in enumerate(("unidirectional", "bidirectional")):
            scores = [s for _, s in row[name]["tokens"]]
            ax.bar([i + (k - 0.5) * width for i in range(len(scores))], scores, width=width, label=name)
        n = len(row["unidirectional"]["tokens"])
        # Token positions, not the tokens: matplotlib's default font has no Hangul (the JSON has the tokens).
        ax.set_xticks(range(n), [str(i + 1) for i in range(n)])
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xlabel("token")
        ax.set_ylabel("IG score for the predicted label")
        ax.set_title(f"example {examples.index(row) + 1} ({n} tokens)")
    return save_figure(fig, path)
