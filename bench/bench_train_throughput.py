"""Training throughput: images/s and the share of step time spent waiting for data.

Runs the real trainer (``byoc.local.training_job.run_training_job``, process mode) in two modes
-- head-only (``freeze=head`` with ``feature-cache=false``: the image loop) and full fine-tuning
(``freeze=none``) -- each with the
default data settings (``workers`` default of the trainer) and with a naive baseline
(``workers=0``: decoding and transforms in the training process), all in one run, on the same
JPEGs. Numbers come from the trainer's own step timings (``contract.STEP_TIMINGS_FILE``, TRAIN
steps): images/s = images / sum(step_s), data wait share = sum(data_wait_s) / sum(step_s). The
first step of each epoch (worker start-up) is reported separately from the steady state. A last
row shows ``freeze=head`` with the trainer's default feature cache (its steps read cached tensors;
computing the cache is not a TRAIN step and shows in the job's wall time instead).

The images are generated at ``--source-size`` px (dogImages photos are ~500x375 JPEGs), because
decode + resize of full-size photos is what the data pipeline costs; 64 px images would hide it.

    .venv/bin/python -m bench.bench_train_throughput
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import machine_note, print_table
from container_train.contract import STEP_TIMINGS_FILE
from container_train.hyperparameters import DEFAULTS


def step_stats(timings_file: Path) -> dict:
    rows = [json.loads(line) for line in timings_file.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r["mode"] == "TRAIN"]
    steady = [r for r in train if r["step"] > 1]
    first = [r for r in train if r["step"] == 1]

    def agg(rs):
        step = sum(r["step_s"] for r in rs)
        return {"images": sum(r["batch_size"] for r in rs), "step_s": step,
                "img_per_s": sum(r["batch_size"] for r in rs) / step if step else float("nan"),
                "wait_share": sum(r["data_wait_s"] for r in rs) / step if step else float("nan")}

    return {"steady": agg(steady), "first": agg(first), "all": agg(train), "steps": len(train)}


def main(argv: list[str] | None = None) -> dict:
    from byoc.datasets.synthetic import make_dataset
    from byoc.local.training_job import run_training_job

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=8, help="max-steps-per-epoch")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--source-size", type=int, default=448, help="pixel size of the generated JPEGs")
    p.add_argument("--per-class", type=int, default=32)
    p.add_argument("--modes", default="head,none")
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    work = a.work_dir or Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    data = work / "data"
    if not data.exists():
        make_dataset(data, num_classes=4, per_class={"train": a.per_class, "valid": 4, "test": 1},
                     size=a.source_size, seed=0)
    default_workers = DEFAULTS["workers"]
    variants = [(mode, label, workers) for mode in a.modes.split(",")
                for label, workers in (("default", default_workers), ("naive", 0))]
    if "head" in a.modes.split(","):
        variants.append(("head", "cache", default_workers))
    print(f"# bench_train_throughput: {machine_note()}; {a.arch} pretrained=false @ {a.image_size}px, "
          f"batch {a.batch_size}, {a.steps} steps x {a.epochs} epoch(s), {a.source_size}px JPEGs", flush=True)
    results = {}
    for mode, label, workers in variants:
        name = f"{mode}-{label}"
        hps = {"arch": a.arch, "pretrained": False, "freeze": mode, "epochs": a.epochs, "batch-size": a.batch_size,
               "image-size": a.image_size, "max-steps-per-epoch": a.steps, "workers": workers,
               "debugger": False, "checkpoint": False,
               # head-only image loop vs the default (auto) feature cache for freeze=head. JSON-encoded:
               # the toolkit JSON-decodes values, a bare "false" would arrive as "False".
               "feature-cache": json.dumps("true" if label == "cache" else ("false" if mode == "head" else "auto"))}
        start = time.perf_counter()
        r = run_training_job(work / name, hps, {"training": data}, timeout=1200)
        if not r.ok:
            raise RuntimeError(f"{r}\n{r.log_text[-3000:]}")
        results[name] = {"workers": workers, "wall_s": time.perf_counter() - start,
                         **step_stats(r.output_data_dir / STEP_TIMINGS_FILE)}
        s = results[name]["steady"]
        print(f"# {name}: {s['img_per_s']:.1f} img/s, data wait {s['wait_share'] * 100:.1f}%", flush=True)
    rows = []
    for mode in a.modes.split(","):
        d, n = results[f"{mode}-default"], results[f"{mode}-naive"]
        pairs = [("default", d), ("naive", n)]
        if f"{mode}-cache" in results:
            pairs.append(("feature cache (default for freeze=head)", results[f"{mode}-cache"]))
        for label, r in pairs:
            rows.append([f"freeze={mode}", f"{label} (workers={r['workers']})", f"{r['steady']['img_per_s']:.1f}",
                         f"{r['steady']['wait_share'] * 100:.1f}%", f"{r['first']['wait_share'] * 100:.1f}%",
                         f"{r['all']['wait_share'] * 100:.1f}%",
                         f"{r['steady']['img_per_s'] / n['steady']['img_per_s']:.2f}x", f"{r['wall_s']:.1f}"])
    print_table("Training throughput (TRAIN steps from profiler/step_timings.jsonl)",
                ["mode", "data loading", "img/s (steady)", "data wait (steady)", "data wait (step 1)",
                 "data wait (all)", "img/s vs naive", "job wall s"], rows)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
