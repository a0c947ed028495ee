"""SetFit three ways at 8 and 64 labelled examples per class: the ``setfit`` package used directly, adaptlab's ``setfit``
entry, and the best of adaptlab's other classification entries, on Rotten Tomatoes (2 classes) and wiki-topics (11).

Every arm of a cell trains on the same split: ``split_data(load_data(DATASET), seed=s, train_per_class=N)`` (the
smaller draw is part of the larger, as in ``compare --train-sizes``), with the same validation and test sets.

- ``accuracy_setfit_package``: the ``setfit`` package as its docs show it: ``SetFitModel.from_pretrained`` on the same
  encoder (its default head, scikit-learn ``LogisticRegression()``), ``Trainer(model, TrainingArguments(...),
  train_dataset=...)``, ``trainer.train()`` (contrastive body tuning, then the head), ``model.predict`` on the test set.
  It sees no validation data. Same settings as the entry: 20 iterations, 1 epoch, batch 16, body lr 2e-5, the same
  token cap and seed.
- ``accuracy_setfit_entry``: ``adaptlab.train("setfit", ...)`` with the comparison entry's parameters (the quick
  preset's token cap): setfit's body tuning, then ``features``' scaled logistic regression with C chosen on validation.
- ``best_other_entry`` / ``accuracy_best_other``: every other classification entry that runs on an encoder, each with
  the parameters the quick preset gives it in ``adaptlab compare`` (step budget, patience, learning-rate search for
  the sensitive ones); the best is picked by mean test accuracy, so it is an upper bound for the rest of the ladder
  (``accuracy_by_entry`` lists them all, with their validation accuracy).

Accuracies are means over ``--seeds`` data seeds (each seed draws its own examples and trains with that seed;
``per_seed`` keeps every value). Training times (``train_seconds``): the package's ``trainer.train()``, adaptlab's fit
timer (``manifest["cost"]["train_seconds"]``); loading and testing are outside both. Not run yet: SetFit's pairs grow
with the training set (2 x 20 per text: 28,160 for wiki-topics at 64 per class, 1,760 steps of 16 pairs per SetFit
arm, and minilm took 0.75-0.8 s a step on 2 CPU cores), so expect over an hour per seed on such a machine.

    python benchmarks/setfit_vs_ladder.py [--seeds 1] [--sizes 8,64] [--datasets rotten_tomatoes,wiki-topics] [--test-size N]
    python benchmarks/setfit_vs_ladder.py --model PATH --sizes 8 --entries features-logreg --num-iterations 2 \\
        --test-size 40 --out /tmp/setfit_smoke.json    # a smoke test on a tiny model
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import _common
import numpy as np

NAME = "setfit_vs_ladder"
SETFIT = {"num_iterations": 20, "epochs": 1, "batch_size": 16, "lr": 2e-5}  # the entry's defaults, setfit's own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="minilm", help="the encoder every arm starts from (default: minilm)")
    parser.add_argument("--datasets", default="rotten_tomatoes,wiki-topics")
    parser.add_argument("--sizes", default="8,64", help="training examples per class")
    parser.add_argument("--seeds", type=int, default=1, help="data and training seeds 0..N-1 (accuracies: their mean)")
    parser.add_argument("--test-size", type=int, default=None, help="default: the whole test pool (a fifth of the data)")
    parser.add_argument("--val-size", type=int, default=None, help="default: split_data's for a per-class draw")
    parser.add_argument("--entries", default=None, help="the other entries to run (default: every encoder entry)")
    parser.add_argument("--num-iterations", type=int, default=SETFIT["num_iterations"], help="both SetFit arms")
    parser.add_argument("--out", type=Path, default=None, help=f"result file (default: benchmarks/results/{NAME}.json)")
    args = parser.parse_args()
    os.environ["ADAPTLAB_CACHE"] = tempfile.mkdtemp(prefix="adaptlab-bench-")  # cold embedding and probe caches

    from adaptlab.compare.classification import CLASSIFIERS, ENTRIES, PRESETS

    setfit = {**SETFIT, "num_iterations": args.num_iterations}
    others = args.entries.split(",") if args.entries else [n for n, e in ENTRIES.items() if e.needs != "decoder" and n != "setfit"]
    unknown = [n for n in others if n not in ENTRIES or n == "setfit"]
    if unknown:
        sys.exit(f"--entries: unknown or not another entry: {', '.join(unknown)}")
    preset, plan = PRESETS["quick"], SimpleNamespace(epochs=None, tune=0, params={})
    info = model_info(args.model)
    cells = []
    for dataset in args.datasets.split(","):
        data = load(dataset)
        for size in [int(s) for s in args.sizes.split(",")]:
            runs: dict[str, list[dict]] = {}
            for seed in range(args.seeds):
                splits = split(data, seed, size, args.val_size, args.test_size)
                print(f"{dataset}, {size} per class, seed {seed}: train/val/test {len(splits.train)}/{len(splits.val)}/"
                      f"{len(splits.test)}", file=sys.stderr)
                entry_params = CLASSIFIERS.params(ENTRIES["setfit"], args.model, plan, preset, info)
                max_length = entry_params.get("max_length")
                runs.setdefault("setfit-package", []).append(package_run(splits, args.model, setfit, max_length, seed))
                runs.setdefault("setfit", []).append(entry_run("setfit", {**entry_params, **setfit}, splits, seed))
                for name in others:
                    entry = ENTRIES[name]
                    params, _ = CLASSIFIERS.finish(entry, CLASSIFIERS.params(entry, args.model, plan, preset, info), plan, preset)
                    runs.setdefault(name, []).append(entry_run(entry.strategy, params, splits, seed))
            cells.append(cell(dataset, size, runs, others))
    summary = {
        "setup": {"model": args.model, "sizes_per_class": args.sizes, "seeds": args.seeds, "test_size": args.test_size,
                  "val_size": args.val_size, "setfit": {**setfit, "max_length": "the quick preset's cap (128) for both arms"},
                  "other_entries": others, "their_params": "adaptlab compare's quick preset (budget, lr search)"},
        "results": cells,
        "method": {
            "package": "SetFitModel.from_pretrained(encoder) + setfit.Trainer(TrainingArguments(...), train_dataset).train(), "
                       "its LogisticRegression() head; model.predict(test)",
            "entry": "adaptlab.train('setfit', ...): setfit's Trainer.train_embeddings, then features' scaled logistic "
                     "regression (C on validation) on the tuned body",
            "best_other": "the other entry with the highest mean test accuracy (an upper bound for the rest of the ladder)",
            "train_seconds": "package: trainer.train(); adaptlab: manifest cost.train_seconds (fit only)",
        },
    }
    if args.out is not None:  # save() writes <RESULTS>/<name>.json
        _common.RESULTS = args.out.resolve().parent
        _common.save(args.out.stem, summary)
    else:
        _common.save(NAME, summary)


def load(dataset: str):
    from adaptlab.data import load_data

    return load_data(dataset)


def split(data, seed: int, per_class: int, val_size: int | None, test_size: int | None):
    from adaptlab.data import split_data

    return split_data(data, seed=seed, train_per_class=per_class, val_size=val_size, test_size=test_size)


def model_info(model: str):
    from transformers import AutoConfig

    from adaptlab.compare.runs import ModelInfo
    from adaptlab.models.loading import max_positions, model_kind, resolve_model

    ref = resolve_model(model)
    return ModelInfo(model_kind(ref), max_positions(AutoConfig.from_pretrained(ref.path)))


def package_run(splits, model: str, setfit: dict, max_length: int | None, seed: int) -> dict:
    """The setfit package on its own: its model, its Trainer, its head."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from adaptlab.models.loading import resolve_model

    with tempfile.TemporaryDirectory() as workdir:
        model_ = SetFitModel.from_pretrained(resolve_model(model).path)
        if max_length is not None:
            model_.model_body.max_seq_length = max_length
        arguments = TrainingArguments(output_dir=workdir, num_iterations=setfit["num_iterations"], num_epochs=setfit["epochs"],
                                      batch_size=setfit["batch_size"], body_learning_rate=setfit["lr"], max_length=max_length,
                                      seed=seed, report_to="none", save_strategy="no", show_progress_bar=False)
        train = Dataset.from_dict({"text": list(splits.train.texts), "label": [int(y) for y in splits.train.labels]})
        trainer = Trainer(model=model_, args=arguments, train_dataset=train)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        predicted = np.asarray(model_.predict(list(splits.test.texts), as_numpy=True))
    return {"test_accuracy": float((predicted == splits.test.labels).mean()), "val_accuracy": None,
            "train_seconds": round(seconds, 2)}


def entry_run(strategy: str, params: dict, splits, seed: int) -> dict:
    import adaptlab

    with tempfile.TemporaryDirectory() as workdir:
        result = adaptlab.train(strategy, splits, Path(workdir) / "artifact", **{**params, "progress": False, "seed": seed})
    manifest = result.manifest
    return {"test_accuracy": manifest["metrics"]["test"]["accuracy"], "val_accuracy": manifest["metrics"]["val"]["accuracy"],
            "train_seconds": manifest["cost"]["train_seconds"]}


def cell(dataset: str, size: int, runs: dict[str, list[dict]], others: list[str]) -> dict:
    mean = {name: statistics.fmean(r["test_accuracy"] for r in rows) for name, rows in runs.items()}
    best = max(others, key=lambda name: mean[name])
    return {
        "dataset": dataset,
        "train_per_class": size,
        "accuracy_setfit_package": round(mean["setfit-package"], 4),
        "accuracy_setfit_entry": round(mean["setfit"], 4),
        "best_other_entry": best,
        "accuracy_best_other": round(mean[best], 4),
        "accuracy_by_entry": {name: round(mean[name], 4) for name in others},
        "val_accuracy_by_entry": {name: round(statistics.fmean(r["val_accuracy"] for r in runs[name]), 4) for name in others},
        "train_seconds": {name: round(statistics.fmean(r["train_seconds"] for r in rows), 2) for name, rows in runs.items()},
        "per_seed": {name: [r["test_accuracy"] for r in rows] for name, rows in runs.items()},
    }


if __name__ == "__main__":
    main()
