"""Gather every lab result in a folder into one Markdown page, ``report.md``."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import RnnkitError
from ..run import atomic_write_bytes
from . import EXPERIMENTS


def build_report(folder: str | Path) -> Path:
    """Write ``<folder>/report.md`` from the ``<experiment>.json`` files there; return its path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RnnkitError(f"lab folder not found: {folder}; run e.g. `rnnkit lab basics --out {folder}` first")
    results = []
    for name in EXPERIMENTS:
        path = folder / f"{name}.json"
        if path.is_file():
            try:
                results.append(json.loads(path.read_text(encoding="utf-8")))
            except json.JSONDecodeError as exc:
                raise RnnkitError(f"{path} is not valid JSON ({exc.msg}); re-run `rnnkit lab {name}`") from None
    if not results:
        raise RnnkitError(f"no lab results in {folder}; run e.g. `rnnkit lab basics --out {folder}` first")
    lines = ["# rnnkit lab report", ""]
    for r in results:
        lines += [f"## {r['experiment']}: {r['title']}", "",
                  f"`{r['command']}` ({r['mode']} mode, seed {r['seed']}, {r['seconds']} s, "
                  f"torch {r['machine']['torch']}, {r['date']})", ""]
        lines += [f"- {f}" for f in r.get("findings", [])]
        lines.append("")
        lines += _table(r)
        lines += [f"![{r['experiment']}]({fig})" for fig in r.get("figures", [])]
        lines.append("")
    out = folder / "report.md"
    atomic_write_bytes(out, "\n".join(lines).encode("utf-8"))
    return out


def _table(r: dict) -> list[str]:
    if r["experiment"] == "memory":
        lengths = sorted({row["length"] for row in r["results"]})
        head = "| variant | " + " | ".join(f"L={n}" for n in lengths) + " |"
        rows = [head, "|---" * (len(lengths) + 1) + "|"]
        for variant in dict.fromkeys(row["variant"] for row in r["results"]):
            accs = {row["length"]: row["test_accuracy"] for row in r["results"] if row["variant"] == variant}
            rows.append(f"| {variant} | " + " | ".join(f"{accs[n]:.3f}" for n in lengths) + " |")
        return rows + [""]
    if r["experiment"] == "dropout":
        rows = ["| dropout | train acc. | val acc. | gap |", "|---|---|---|---|"]
        rows += [f"| {x['variant']} | {x['train_accuracy']:.3f} | {x['val_accuracy']:.3f} | "
                 f"{x['train_accuracy'] - x['val_accuracy']:+.3f} |" for x in r["results"]]
        return rows + [""]
    if r["experiment"] == "gradients":
        steps = r.get("steps_to_fall_1e6", {})
        rows = ["| model | far/near gradient at init | after training | steps to fall 1e6x: init | trained |",
                "|---|---|---|---|---|"]
        for k, v in r["ratio_far_to_near"].items():
            s = steps.get(k, {})
            rows.append(f"| {k} | {v['init']:.1e} | {v['trained']:.1e} | {_or_never(s.get('init'))} | "
                        f"{_or_never(s.get('trained'))} |")
        return rows + [""]
    if r["experiment"] == "basics":
        rows = ["| claim | expected | observed |", "|---|---|---|"]
        rows += [f"| {c['claim']} | {c['expected']} | {c['observed']} |" for c in r["claims"]]
        study = r.get("hidden_size_study")
        if study:
            rows += ["", "| hidden size | head | parameters | test accuracy | final loss | highest probability |",
                     "|---|---|---|---|---|---|"]
            rows += [f"| {x['hidden_size']} | {'Linear(hidden, 3)' if x['head'] else 'none (h_n are the logits)'} | "
                     f"{x['parameters']} | {x['test_accuracy']:.3f} | {x['final_loss']:.3f} | "
                     f"{x['highest_probability']:.3f} |" for x in study["rows"]]
        return rows + [""]
    if r["experiment"] == "explain":
        rows = []
        for k, ex in enumerate(r["examples"], 1):
            u, b = ex["unidirectional"], ex["bidirectional"]
            rows += [f"Example {k}: `{ex['text']}`: unidirectional {u['label']} {u['probability']:.2f}, "
                     f"bidirectional {b['label']} {b['probability']:.2f}", "",
                     "| # | token | unidirectional | bidirectional |", "|---|---|---|---|"]
            rows += [f"| {i} | {tu[0]} | {tu[1]:+.3f} | {tb[1]:+.3f} |"
                     for i, (tu, tb) in enumerate(zip(u["tokens"], b["tokens"]), 1)]
            rows.append("")
        return rows
    return []


def _or_never(value) -> str:
    return "never" if value is None else str(value)
