"""Export a run for use outside rnnkit: ONNX (checked with onnxruntime) or TorchScript.

    rnnkit export runs/surnames --format onnx --out exports/surnames

The exported graph takes ``ids (batch, seq) int64`` and ``lengths (batch,)
int64`` (any batch size, any sequence length) and returns ``probabilities
(batch, classes)``. ``vectorizer.json`` (tokenizer settings, vocabulary, labels)
goes beside it, so a consumer can turn text into ids the same way.

ONNX has no packed sequences, so :class:`PaddedClassifier` runs the model on
its padded path (:mod:`rnnkit.padded`, the same code training uses): the
forward direction reads the padded rows as they are and the backward direction
reads each row *reversed within its length*, which puts its valid steps first too.

TorchScript (``torch.jit.trace``) is the second format: it keeps ``aten::lstm``
as one op, so any sequence length works. ``torch.export`` does not serve here:
it unrolls the recurrent layers and fixes the sequence length at export time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import RnnkitError
from .run import atomic_write_json, check_out_folder
from .model import SequenceClassifier, make_rnn

FORMATS = ("onnx", "torchscript")
OPSET = 17


class PaddedClassifier(nn.Module):
    """:class:`SequenceClassifier`'s inference function on padded batches, without packing.

    ``forward(ids (B, T) int64, lengths (B,) int64) -> probabilities (B, C)``. It is the
    model itself on the padded path of :mod:`rnnkit.padded` with torch's own recurrent
    kernels (``kernel="native"``), which trace to single ONNX ``LSTM``/``GRU``/``RNN`` ops;
    a ``scratch``-backend model gets a torch twin with the same weights first.
    """

    def __init__(self, model: SequenceClassifier):
        super().__init__()
        model = copy.deepcopy(model)
        if not isinstance(model.rnn, nn.RNNBase):
            rnn = model.rnn
            twin = make_rnn(model.cell, "torch", rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.bidirectional,
                            0.0, getattr(rnn, "nonlinearity", "tanh"), rnn.proj_size)
            twin.load_state_dict(rnn.state_dict())
            model.rnn = twin
        model.kernel = "native"
        self.model = model

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, vectors: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.probabilities(self.model(ids, lengths, vectors=vectors))


def example_inputs(model: SequenceClassifier, ids: torch.Tensor, lengths: torch.Tensor) -> dict:
    """The exported graph's inputs for ``ids``/``lengths``: with text vectors, also the vectors the run computes
    from them (the graph takes them as an input; a tokenizer is not a tensor operation)."""
    inputs = {"ids": ids, "lengths": lengths}
    if model.text_vector_dim:
        inputs["vectors"] = model.text_vectors(ids, lengths)
    return inputs


def example_batch(vocab_size: int, batch: int = 5, max_len: int = 12, seed: int = 0, separator: int = -1):
    """Random ids/lengths of mixed lengths (one row at full length), padding zeroed; ``separator`` >= 0 (a
    character branch's ``<chars>``) goes at a random place in each row, so both parts vary in length."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (batch,), generator=g)
    lengths[0] = max_len
    ids = torch.randint(4, max(vocab_size, 5), (batch, max_len), generator=g)
    if separator >= 0:
        ids[ids == separator] = 4 if separator != 4 else 5
        place = (torch.rand(batch, generator=g) * lengths).long()
        ids[torch.arange(batch), place] = separator
    ids[torch.arange(max_len).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    return ids, lengths


def _separator(model: SequenceClassifier) -> int:
    return int(model.char_separator) if model.char_branch else -1


def export_model(model: SequenceClassifier, path: Path, fmt: str = "onnx") -> Path:
    """Write ``model`` in ``fmt`` to ``path``; returns the path."""
    padded = PaddedClassifier(model.cpu().eval()).eval()
    inputs = example_inputs(model, *example_batch(model.embedding.num_embeddings, separator=_separator(model)))
    names, args = list(inputs), tuple(inputs.values())
    if fmt == "onnx":
        if model.rnn.proj_size:
            # ONNX's LSTM op has no projection, and torch's exporter refuses to write one.
            raise RnnkitError("ONNX has no LSTM with projections (proj_size > 0); export this run with "
                              "--format torchscript")
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise RnnkitError("ONNX export needs onnx: pip install 'rnnkit[export]'") from None
        tmp = path.with_name(path.name + ".tmp")
        import inspect

        # The TorchScript-based exporter writes nn.LSTM/GRU/RNN as single ONNX ops with a free
        # sequence length; newer torch defaults to the dynamo exporter, so ask for it by name.
        extra = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        with warnings.catch_warnings():
            # torch warns that an RNN exported at batch size > 1 may fail at other batch sizes; the
            # states start at zero inside the graph, and max_difference() checks batch sizes 3 to 19.
            warnings.filterwarnings("ignore", message=".*batch_size other than 1.*")
            torch.onnx.export(padded, args, str(tmp), input_names=names,
                              output_names=["probabilities"], opset_version=OPSET,
                              dynamic_axes={"ids": {0: "batch", 1: "seq"}, "lengths": {0: "batch"},
                                            "probabilities": {0: "batch"},
                                            **({"vectors": {0: "batch"}} if "vectors" in inputs else {})}, **extra)
        tmp.replace(path)
    elif fmt == "torchscript":
        with warnings.catch_warnings():
            # trace warns about Python values it freezes; the graph has none that depend on shapes.
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(padded, args)
        tmp = path.with_name(path.name + ".tmp")
        torch.jit.save(traced, str(tmp))
        tmp.replace(path)
    else:
        raise RnnkitError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    return path


def onnx_session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise RnnkitError("checking an ONNX export needs onnxruntime: pip install 'rnnkit[export]'") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_difference(model: SequenceClassifier, path: Path, fmt: str, trials: int = 5) -> float:
    """Largest |exported - PyTorch| probability over random mixed-length batches."""
    from .predict import predict_proba

    model = copy.deepcopy(model).cpu()
    session = onnx_session(path) if fmt == "onnx" else None
    program = torch.jit.load(str(path)) if fmt == "torchscript" else None
    worst = 0.0
    for trial in range(trials):
        ids, lengths = example_batch(model.embedding.num_embeddings, batch=3 + 4 * trial,
                                     max_len=[7, 31, 2, 60, 15][trial % 5], seed=trial + 1,
                                     separator=_separator(model))
        expected = predict_proba(model, ids, lengths, batch_size=len(ids))
        inputs = example_inputs(model, ids, lengths)
        if session is not None:
            got = torch.from_numpy(session.run(None, {k: v.numpy() for k, v in inputs.items()})[0])
        else:
            with torch.no_grad():
                got = program(*inputs.values())
        worst = max(worst, float((got - expected).abs().max()))
    return worst


def export_run(run_dir, out, fmt: str = "onnx", tolerance: float = 1e-4) -> dict:
    """Export a run folder to ``out`` (model file, vectorizer.json, export.json) and verify it."""
    from .predict import Run

    if fmt not in FORMATS:
        raise RnnkitError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    run = Run.load(run_dir)
    out = Path(out)
    check_out_folder(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    name = "model.onnx" if fmt == "onnx" else "model.torchscript.pt"
    try:
        model_path = export_model(run.model, out / name, fmt)
        diff = max_difference(run.model, model_path, fmt)
        if not diff <= tolerance:
            raise RnnkitError(f"the exported model differs from PyTorch by {diff:.2e} (> {tolerance:g}); "
                              "please report this with the run's config.json")
        shutil.copyfile(Path(run_dir) / "vectorizer.json", out / "vectorizer.json")
        inputs = {"ids": "int64 (batch, seq), 0 = padding, ids from vectorizer.json's vocabulary "
                         "(with <bos>/<eos> around each text when add_bos_eos is true; the tokenizer's own "
                         "tokens, <chars>, then the text's characters when its settings say append_chars)",
                  "lengths": "int64 (batch,), number of valid ids in each row (>= 1)"}
        if run.model.text_vector_dim:
            from .pretrained import TEXT_VECTOR_FILE

            shutil.copyfile(Path(run_dir) / TEXT_VECTOR_FILE, out / TEXT_VECTOR_FILE)
            inputs["vectors"] = (f"float32 (batch, {run.model.text_vector_dim}): each row's text rebuilt from its ids "
                                 "(specials dropped), split by the WordPiece tokenizer in the metadata of "
                                 f"{TEXT_VECTOR_FILE}, the mean of its pieces' rows of that file's table ([UNK]'s "
                                 "for an empty text), scaled to length scale x sqrt(width) (scale in the same "
                                 "metadata); rnnkit.pretrained.TextVectors computes it"
                                 + ("; load_onnx does so" if fmt == "onnx" else ""))
        info = {
            "format": fmt, "file": name, "opset": OPSET if fmt == "onnx" else None,
            "inputs": inputs,
            "outputs": {"probabilities": "float32 (batch, classes), columns in the order of labels, calibrated "
                                         "(logits divided by temperature inside the graph)"
                        + ("; multi-label: a sigmoid per label, predicted where it reaches its threshold"
                           if run.multilabel else "")},
            "labels": run.labels,
            "multilabel": run.multilabel,
            "thresholds": run.vectorizer.thresholds if run.multilabel else None,
            "temperature": float(run.model.temperature),
            "hybrid_not_exported": run.hybrid is not None,
            "max_abs_difference_vs_pytorch": diff,
            "sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
            "source_run": str(Path(run_dir).resolve()),
            "config": {k: getattr(run.config, k) for k in ("cell", "bidirectional", "num_layers", "proj_size",
                                                            "pooling", "char_branch")},
        }
        atomic_write_json(out / "export.json", info)
    except BaseException:  # Ctrl-C included: leave no half-written export behind
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():
                child.unlink()
        raise
    return info


def load_onnx(folder) -> "OnnxClassifier":
    """An exported ONNX folder as a text classifier that needs no PyTorch model code."""
    return OnnxClassifier(folder)


class OnnxClassifier:
    """Text in, probabilities out, through onnxruntime and the exported vectorizer."""

    def __init__(self, folder):
        from .vectorizer import Vectorizer

        folder = Path(folder)
        info_path = folder / "export.json"
        if not info_path.is_file():
            raise RnnkitError(f"{folder} has no export.json; make it with `rnnkit export RUN --out {folder}`")
        self.info = json.loads(info_path.read_text(encoding="utf-8"))
        self.vectorizer = Vectorizer.from_dict(json.loads((folder / "vectorizer.json").read_text(encoding="utf-8")))
        self.session = onnx_session(folder / self.info["file"])
        self.text_vectors = None
        if "vectors" in self.info.get("inputs", {}):
            from .pretrained import TextVectors

            self.text_vectors = TextVectors.from_run(folder, self.vectorizer.vocab.tokens)

    def predict_proba(self, texts: list[str] | str):
        """Probabilities ``(n, classes)``; a single string is one text, as for :meth:`rnnkit.Run.predict_proba`."""
        ids, lengths = self.vectorizer.encode_texts([texts] if isinstance(texts, str) else texts)
        feed = {"ids": ids.long().numpy(), "lengths": lengths.numpy()}
        if self.text_vectors is not None:
            feed["vectors"] = self.text_vectors(ids, lengths).numpy()
        return self.session.run(None, feed)[0]
