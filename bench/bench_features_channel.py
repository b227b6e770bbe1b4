"""The seed's 8-trial grid as SageMaker runs it, with and without the features channel, in one run; and
the cost model for the seed's real setup written from the measured per-image costs.

Every job is a separate run of the training image (``docker run``, ``byoc.local.training_job`` container
mode) in its own ``/opt/ml`` tree, with nothing shared between jobs but their input channels -- exactly
what separate SageMaker training jobs share. Both variants run the grid of the built-in ``tuning`` spec
(lr x batch-size x epochs, 2 x 2 x 2) with ``freeze=head`` (the seed's frozen backbone), one job at a time:

* ``images``: each trial gets the image channels; the trainer's feature cache lives in the trial's own
  checkpoint dir, so every trial runs the backbone over every image once (the seed's trainer did it every
  epoch; the cost model below counts both).
* ``features``: one ``task=extract-features`` job on the images, then every trial gets only its
  ``model.tar.gz`` as the ``features`` channel (``byoc.tuning.features_flow``).

Job-seconds = the wall time of each container, start to exit: what SageMaker bills as the job's training
time (it also bills the data download inside that time; instance provisioning is not billed).

    .venv/bin/python -m bench.bench_features_channel            # see --help; needs `make images`
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.bench_tuning_cache import spec_grid
from bench.common import machine_note, prepare_demo_data, print_table
from byoc.local.training_job import run_training_job
from byoc.packaging import package_job_output
from container_train.contract import PHASES_FILE, parse_metric

# The seed's real setup (the issue; dogImages as the Udacity project ships it).
DOG_IMAGES = {"train": 6680, "valid": 835, "test": 836}
SEED_TRIALS, SEED_TRIAL_MINUTES = 8, 40


def run_job(job_dir: Path, hps: dict, channels: dict, image: str) -> tuple[float, object]:
    start = time.perf_counter()
    result = run_training_job(job_dir, hps, channels, image=image, timeout=3600)
    seconds = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f"{result}\n{result.log_text[-3000:]}")
    return seconds, result


def run_variant(name: str, grid: list[dict], static: dict, channels: dict, work: Path, image: str) -> dict:
    jobs = []
    for i, hp in enumerate(grid):
        seconds, result = run_job(work / f"{name}-trial{i}", {**static, **hp}, channels, image)
        jobs.append({"seconds": seconds, "valid_acc": parse_metric("validation:accuracy", result.log_text)[-1],
                     "train_s": result.metrics["seconds"]})
        print(f"{name} trial {i} {hp}: {seconds:.1f} job-s, valid acc {jobs[-1]['valid_acc']:.3f}", flush=True)
    return {"jobs": jobs, "job_seconds": sum(j["seconds"] for j in jobs),
            "best_valid_acc": max(j["valid_acc"] for j in jobs)}


def phase_seconds(output_data_dir: Path, phase: str) -> float:
    """Seconds a job spent in ``phase`` (profiler/phases.jsonl, container_train.profiling)."""
    lines = (output_data_dir / PHASES_FILE).read_text().splitlines()
    return sum(r["seconds"] for r in map(json.loads, lines) if r["phase"] == phase)


def cost_model(per_image_s: float, job_overhead_s: float, head_job_s: float, epochs_mean: float,
               price_per_hour: float | None = None) -> list[list]:
    """Instance-hours of the seed's 8 trials on dogImages three ways, from this run's per-image backbone cost
    (``per_image_s``), a job's fixed cost (start-up, model build, artifact: ``job_overhead_s``) and a
    features-channel trial's measured length (``head_job_s``; the head's epochs on cached tensors). The
    second column rescales every figure so the seed's row takes what its trials really took (40 min each on
    ml.m5): the same work at that instance's speed."""
    n_all, n_fit = sum(DOG_IMAGES.values()), DOG_IMAGES["train"] + DOG_IMAGES["valid"]
    seed = SEED_TRIALS * (job_overhead_s + per_image_s * (epochs_mean * n_fit + DOG_IMAGES["test"]))
    cached = SEED_TRIALS * (job_overhead_s + per_image_s * (n_fit + DOG_IMAGES["test"]))
    channel = (job_overhead_s + per_image_s * n_all) + SEED_TRIALS * head_job_s
    to_seed_speed = SEED_TRIALS * SEED_TRIAL_MINUTES * 60 / seed
    rows = []
    for label, s in [["seed (backbone every epoch, every trial)", seed], ["images channel, per-trial cache", cached],
                     ["features channel (1 extraction + 8 head-only trials)", channel]]:
        hours = s * to_seed_speed / 3600
        price = f"{hours * price_per_hour:.2f}" if price_per_hour else "-"
        rows.append([label, f"{s / 3600:.2f}", f"{hours:.2f}", price, f"{seed / s:.1f}x"])
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", default="byoc-train:latest")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--pretrained", default="false",
                   help="ImageNet weights (true needs them in the image; offline only efficientnet_lite0 has them)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--train-per-class", type=int, default=20)
    p.add_argument("--valid-per-class", type=int, default=6)
    p.add_argument("--test-per-class", type=int, default=4)
    p.add_argument("--price-per-hour", type=float, default=None,
                   help="the instance's training price in $/hour (SageMaker pricing page) for a cost column")
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args(argv)

    work = a.work_dir or Path(tempfile.mkdtemp(prefix="bench-features-"))
    per_class = {"train": a.train_per_class, "valid": a.valid_per_class, "test": a.test_per_class}
    data, source = prepare_demo_data(work / "data", per_class, size=max(64, a.image_size), num_classes=a.classes)
    images = {"training": data / "train", "validation": data / "valid", "test": data / "test"}
    static = {"arch": a.arch, "pretrained": a.pretrained, "freeze": "head", "image-size": a.image_size,
              "workers": 0, "debugger": False, "seed": 1}
    grid = spec_grid()
    print(f"{machine_note()}; data: {source}, {a.classes} classes, {per_class}; {a.arch} {a.image_size} px; "
          f"image {a.image}", flush=True)

    extract_s, extraction = run_job(work / "extraction", {**static, "task": "extract-features"}, images, a.image)
    channel = package_job_output(extraction.model_dir, work / "features-channel" / "model.tar.gz").parent
    with_features = run_variant("features", grid, static, {"features": channel}, work, a.image)
    with_images = run_variant("images", grid, static, images, work, a.image)
    with_features["job_seconds"] += extract_s

    n_images = sum(per_class.values()) * a.classes
    head_job_s = statistics.fmean(j["seconds"] for j in with_features["jobs"])
    backbone_s = phase_seconds(extraction.output_data_dir, "feature extraction")   # the trainer's own timing
    per_image_s = backbone_s / n_images
    overhead_s = extract_s - backbone_s       # the rest of a job: container, start-up, model build, artifact
    print_table("8-trial grid, each trial its own container job (job-seconds = what SageMaker bills)",
                ["", "images channel", "features channel", "ratio / diff"],
                [["jobs", 8, 9, ""],
                 ["total job-seconds", f"{with_images['job_seconds']:.0f}", f"{with_features['job_seconds']:.0f}",
                  f"{with_images['job_seconds'] / with_features['job_seconds']:.2f}x"],
                 ["  of which the extraction job", "", f"{extract_s:.0f}", ""],
                 ["best trial validation accuracy", f"{with_images['best_valid_acc']:.3f}",
                  f"{with_features['best_valid_acc']:.3f}",
                  f"{(with_features['best_valid_acc'] - with_images['best_valid_acc']) * 100:+.1f} points"]])
    print_table("Per trial", ["lr", "batch", "epochs", "job s images", "job s features", "acc images", "acc features"],
                [[hp["lr"], hp["batch-size"], hp["epochs"], f"{i['seconds']:.1f}", f"{f['seconds']:.1f}",
                  f"{i['valid_acc']:.3f}", f"{f['valid_acc']:.3f}"]
                 for hp, i, f in zip(grid, with_images["jobs"], with_features["jobs"], strict=True)])
    epochs_mean = statistics.fmean(hp["epochs"] for hp in grid)
    print(f"measured: backbone {per_image_s * 1000:.0f} ms per image ({a.arch}, {a.image_size} px, this machine, "
          f"the extraction job's 'feature extraction' phase over {n_images} images); a job's fixed cost "
          f"{overhead_s:.1f} s; a features-channel trial {head_job_s:.1f} s")
    print_table(f"Cost model: the seed's {SEED_TRIALS} trials on dogImages ({sum(DOG_IMAGES.values())} images), "
                "from this machine's measured costs",
                ["setup", "hours here", f"instance-hours at the seed's speed ({SEED_TRIAL_MINUTES} min a trial)",
                 "$ at --price-per-hour", "vs seed"],
                cost_model(per_image_s, overhead_s, head_job_s, epochs_mean, a.price_per_hour))
    out = {"extract_s": extract_s, "backbone_s": backbone_s, "overhead_s": overhead_s, "images": with_images, "features": with_features, "per_image_s": per_image_s,
           "head_job_s": head_job_s, "epochs_mean": epochs_mean, "source": source}
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
