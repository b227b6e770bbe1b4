"""8-trial tuning run (the 2x2x2 grid of lr, batch-size, epochs in the built-in tuning spec) with and without the feature cache.

Both variants run the same eight ``freeze=head`` trials on the same data, ``--parallel`` at a time
(the tuning spec's max_parallel_jobs), one after the other in this process, and the table reports
the wall-time ratio and the validation-accuracy difference per trial.

Both run the real trainer through ``byoc.local.training_job.run_training_job`` (the
sagemaker-training toolkit, process mode):

* ``images``: ``feature-cache=false``: every epoch decodes, augments and runs the frozen backbone
  over every image (a plain head-only loop).
* ``cache``: ``feature-cache=true`` with all eight trials sharing one cache directory
  (``feature_cache_dir``, as the local tuner shares it), so the backbone runs once per image for the whole search; the
  first trial computes under the lock, the others wait and load.

Trials run as direct jobs (a thread pool over run_training_job / subprocesses), not through the
local tuner, so the comparison measures training alone.

    .venv/bin/python -m bench.bench_tuning_cache            # defaults: see --help
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from bench.common import machine_note, prepare_demo_data, print_table
from byoc.tuning.specs import DEFAULT_SPEC
from byoc_common.sagemaker_paths import OUTPUT_DATA_DIR
from container_train.contract import METRICS_FILE, parse_metric


def spec_grid(spec_path: Path = DEFAULT_SPEC) -> list[dict]:
    """The 2x2x2 grid of the project's tuning spec (lr, batch-size, epochs)."""
    params = yaml.safe_load(spec_path.read_text())["parameters"]
    names = ["lr", "batch-size", "epochs"]
    values = [params[n]["values"] for n in names]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def run_trial(job_dir: Path, hps: dict, data: Path, cache_dir: Path | None = None) -> tuple[str, float]:
    from byoc.local.training_job import run_training_job

    start = time.perf_counter()
    r = run_training_job(job_dir, hps, {"training": data}, feature_cache_dir=cache_dir, timeout=1800)
    if not r.ok:
        raise RuntimeError(f"{r}\n{r.log_text[-3000:]}")
    return r.log_text, time.perf_counter() - start


def run_cache_trial(job_dir: Path, hps: dict, data: Path, cache_dir: Path, views: int = 0) -> tuple[str, float]:
    return run_trial(job_dir, {**hps, "feature-cache": True, "feature-cache-views": views}, data, cache_dir)


def variant_name(views: int | None) -> str:
    """``images`` (no cache), ``cache`` (one eval view per image), ``cache-vN`` (N augmented views)."""
    return "images" if views is None else ("cache" if views == 0 else f"cache-v{views}")


def run_variant(views: int | None, grid: list[dict], static: dict, data: Path, work: Path, parallel: int) -> dict:
    name = variant_name(views)
    cache_dir = work / "feature-cache"

    def trial(i_hp):
        i, hp = i_hp
        hps = {**static, **hp}
        job = work / f"{name}-trial{i}"
        if views is None:
            return run_trial(job, {**hps, "feature-cache": False}, data)
        return run_cache_trial(job, hps, data, cache_dir, views)

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        outs = list(pool.map(trial, enumerate(grid)))
    wall = time.perf_counter() - start
    accs = [parse_metric("validation:accuracy", log)[-1] for log, _ in outs]
    # metrics.json "seconds": from the built model to the saved artifact (training, validation, test,
    # and for the cache variant computing or loading the features); excludes process start-up.
    train_s = [json.loads((work / f"{name}-trial{i}" / OUTPUT_DATA_DIR / METRICS_FILE).read_text())["seconds"]
               for i in range(len(grid))]
    return {"wall_s": wall, "trial_s": [t for _, t in outs], "train_s": train_s, "valid_acc": accs}


def print_comparison(grid: list[dict], img: dict, cac: dict, name: str) -> None:
    """Per-trial and summary tables: the image loop against one cache variant."""
    rows = []
    for i, hp in enumerate(grid):
        ti, tc, si, sc = img["trial_s"][i], cac["trial_s"][i], img["train_s"][i], cac["train_s"][i]
        ai, ac = img["valid_acc"][i], cac["valid_acc"][i]
        rows.append([hp["lr"], hp["batch-size"], hp["epochs"], f"{ti:.1f}", f"{tc:.1f}", f"{ti / tc:.1f}x",
                     f"{si:.1f}", f"{sc:.1f}", f"{si / sc:.1f}x", f"{ai:.3f}", f"{ac:.3f}", f"{(ac - ai) * 100:+.1f}"])
    print_table(f"Per trial (images vs {name}): job wall time, training time (metrics.json seconds, no "
                "process start-up), final-epoch validation accuracy",
                ["lr", "batch", "epochs", "job s images", f"job s {name}", "ratio", "train s images",
                 f"train s {name}", "ratio", "acc images", f"acc {name}", "diff (points)"], rows)
    best_i, best_c = max(img["valid_acc"]), max(cac["valid_acc"])
    mean_i, mean_c = statistics.fmean(img["valid_acc"]), statistics.fmean(cac["valid_acc"])
    summary = [
        ["8-trial wall time (s)", f"{img['wall_s']:.1f}", f"{cac['wall_s']:.1f}", f"{img['wall_s'] / cac['wall_s']:.1f}x"],
        ["sum of training time (s)", f"{sum(img['train_s']):.1f}", f"{sum(cac['train_s']):.1f}",
         f"{sum(img['train_s']) / sum(cac['train_s']):.1f}x"],
        ["best trial validation accuracy", f"{best_i:.3f}", f"{best_c:.3f}", f"{(best_c - best_i) * 100:+.1f} points"],
        ["mean validation accuracy", f"{mean_i:.3f}", f"{mean_c:.3f}", f"{(mean_c - mean_i) * 100:+.1f} points"],
    ]
    print_table(f"Tuning run: feature-cache=false (images) vs {name}", ["", "images", name, "ratio / diff"], summary)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--pretrained", default="true")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--train-per-class", type=int, default=40)
    p.add_argument("--valid-per-class", type=int, default=20)
    p.add_argument("--test-per-class", type=int, default=5)
    p.add_argument("--parallel", type=int, default=2, help="trials at a time (tuning.yaml max_parallel_jobs)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers per trial")
    p.add_argument("--epochs-scale", type=float, default=1.0,
                   help="multiply the grid's epochs (e.g. 0.5 for a quick check)")
    p.add_argument("--cache-views", default="0",
                   help="comma-separated feature-cache-views values, one cache variant each "
                        "(0 = one eval view per image; N = N augmented views cycled over epochs)")
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args(argv)

    work = a.work_dir or Path(tempfile.mkdtemp(prefix="bench-tuning-"))
    data, source = prepare_demo_data(work / "data", {"train": a.train_per_class, "valid": a.valid_per_class,
                                                     "test": a.test_per_class}, size=64, num_classes=a.classes)
    grid = spec_grid()
    for hp in grid:
        hp["epochs"] = max(1, round(hp["epochs"] * a.epochs_scale))
    static = {"arch": a.arch, "pretrained": a.pretrained, "freeze": "head", "image-size": a.image_size,
              "workers": a.workers, "debugger": "false", "checkpoint": "false", "seed": 42}
    print(f"# bench_tuning_cache: {machine_note()}\n# data: {source} {a.classes} classes, "
          f"{a.train_per_class}/{a.valid_per_class}/{a.test_per_class} per class; static {static}; "
          f"grid {grid}; parallel {a.parallel}; work dir {work}", flush=True)
    variants = [None] + [int(v) for v in a.cache_views.split(",")]
    results = {}
    for views in variants:
        shutil.rmtree(work / "feature-cache", ignore_errors=True)
        results[variant_name(views)] = run_variant(views, grid, static, data, work, a.parallel)
        print(f"# {variant_name(views)}: {results[variant_name(views)]['wall_s']:.1f}s", flush=True)
    img = results["images"]
    for name in [variant_name(v) for v in variants[1:]]:
        print_comparison(grid, img, results[name], name)
    out = {"grid": grid, "static": static, "source": source, "results": results}
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
