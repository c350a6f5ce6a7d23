"""Self-distillation ("born-again" networks): does a second run taught by the first beat it on validation?

    python benchmarks/self_distill.py --dataset names --data-dir ../shared/data --jobs 2 --threads 1 \
        --seeds 0 1 2 3 4 --variants 0.5,2 1,1 --out benchmarks/results/self-distill-names.json

Per seed, the teacher is the dataset's default run (``baseline`` off; ``--set`` changes both). Each student is the same recipe
and seed, trained on ``(1 - a) * default loss + a * T^2 * KL(softmax(teacher / T) || softmax(student / T))``
for each ``a,T`` in ``--variants``, with the teacher's logits on the training rows. The result is
one model per run, but it costs a whole second run. Not in rnnkit: it is measured here, and chosen on
validation only (see BENCHMARKS.md).
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def one_seed(job) -> list[dict]:
    import torch
    import torch.nn.functional as F

    import rnnkit
    import rnnkit.trainer as trainer
    from rnnkit.data import load_config_splits
    from rnnkit.predict import predict_logits
    from rnnkit.vectorizer import EncodedSplit

    from common import run_scores

    dataset, data_dir, seed, variants, threads, overrides = job
    torch.set_num_threads(threads)

    def config():
        out = Path(tempfile.mkdtemp(prefix="distill-")) / "run"
        cfg = rnnkit.Config.for_dataset(dataset, data_dir=data_dir, seed=seed, out=str(out), progress=False)
        return cfg.update({"baseline": False, **overrides})

    def row(run, variant, started) -> dict:
        return {"seed": seed, "variant": variant, **run_scores(run), "seconds": round(time.perf_counter() - started, 1)}

    started = time.perf_counter()
    teacher = rnnkit.train(config(), log=lambda m: None)
    rows = [row(teacher, "teacher", started)]
    splits = load_config_splits(teacher.config)
    ids, lengths = teacher.vectorizer.encode_texts(splits.train.texts)
    taught = predict_logits(teacher.model, ids, lengths, 256, "cpu", teacher.amp)
    labels = teacher.vectorizer.encode_labels(splits.train.labels, "the train split")
    rows[0]["train"] = float((taught.argmax(1) == labels).float().mean())

    # The loss sees only (logits, y); the rows of the batch come from the training split's batch().
    rows_now: dict = {}
    checked: set = set()  # splits already compared with the teacher's rows (once each, not every batch)
    plain_batch = EncodedSplit.batch

    def batch(split, index):
        if len(split.lengths) == len(lengths):
            if id(split) not in checked:
                if not torch.equal(split.lengths, lengths):
                    raise RuntimeError("the student's training rows differ from the teacher's")
                checked.add(id(split))
            rows_now["index"] = index
        else:
            rows_now.pop("index", None)
        return plain_batch(split, index)

    class Distilled(torch.nn.Module):
        def __init__(self, base: torch.nn.Module, a: float, t: float):
            super().__init__()
            self.base, self.a, self.t = base, a, t

        def forward(self, logits, y):
            loss = self.base(logits, y)
            index = rows_now.get("index")
            if not torch.is_grad_enabled() or index is None or len(index) != len(y):
                return loss
            target = F.softmax(taught[index] / self.t, dim=1)
            kd = F.kl_div(F.log_softmax(logits / self.t, dim=1), target, reduction="batchmean")
            return (1 - self.a) * loss + self.a * self.t ** 2 * kd

    EncodedSplit.batch = batch
    plain_loss = trainer.loss_function
    try:
        for a, t in variants:
            trainer.loss_function = lambda *args, a=a, t=t, **kw: Distilled(plain_loss(*args, **kw), a, t)
            started = time.perf_counter()
            rows.append(row(rnnkit.train(config(), log=lambda m: None), f"a={a:g},T={t:g}", started))
    finally:
        EncodedSplit.batch, trainer.loss_function = plain_batch, plain_loss
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=["0.5,2"], help="a,T pairs: the distillation weight and temperature")
    parser.add_argument("--set", default="{}", help='config overrides for teacher and students, as JSON: \'{"epochs": 1}\'')
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    variants = [tuple(float(x) for x in v.split(",")) for v in args.variants]
    overrides = json.loads(args.set)
    jobs = [(args.dataset, args.data_dir, s, variants, args.threads, overrides) for s in args.seeds]
    results = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for rows in pool.map(one_seed, jobs):
            for r in rows:
                print(json.dumps(r), flush=True)
            results += rows
    print("\nmean over seeds:")
    for variant in dict.fromkeys(r["variant"] for r in results):
        rs = [r for r in results if r["variant"] == variant]
        print(f"{variant:>12}  val {statistics.mean(r['val'] for r in rs):.4f}  "
              f"test {statistics.mean(r['test'] for r in rs):.4f}  f1 {statistics.mean(r['test_f1'] for r in rs):.4f}  "
              f"{statistics.mean(r['seconds'] for r in rs):6.1f}s")
    if args.out:
        from common import machine

        Path(args.out).write_text(json.dumps({"machine": machine(), "runs": results}, indent=1))


if __name__ == "__main__":
    main()
