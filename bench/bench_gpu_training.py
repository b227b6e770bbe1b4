"""GPU training throughput: mixed-precision ResNet50 fine-tuning at the trainer's default settings,
then the same job through the distributed launcher (torchrun, world size 1). Any CUDA machine, < 10 min.

Both runs are real local training jobs (``byoc.local``: the sagemaker-training toolkit runs
``train.py``; the second with ``SAGEMAKER_TRAINING_MODULE`` = the image's launcher and
``sagemaker_torch_distributed_enabled``), on generated 224 px JPEGs, ``arch=resnet50``,
``freeze=none``, ``pretrained=false`` (no download), everything else default (batch 32, amp on,
workers as ``/dev/shm`` allows). From each job's ``profiler/step_timings.jsonl``: training images/s
(steps after the first 5) and the data-wait share of step time. Without CUDA it prints
"not measured" and exits 0.

    .venv/bin/python -m bench.bench_gpu_training --images-per-class 120 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from bench.common import machine_note, print_table


def step_figures(output_data: Path, skip: int = 5) -> tuple[float, float, int]:
    """(images/s, data-wait share, steps) over the TRAIN steps after the first ``skip`` of each epoch."""
    from container_train.contract import STEP_TIMINGS_FILE

    rows = [json.loads(line) for line in (output_data / STEP_TIMINGS_FILE).read_text().splitlines() if line]
    train = [r for r in rows if r["mode"] == "TRAIN" and r["step"] > skip]
    seconds = sum(r["step_s"] for r in train)
    images = sum(r["batch_size"] for r in train)
    wait = sum(r["data_wait_s"] for r in train)
    return images / max(seconds, 1e-9), wait / max(seconds, 1e-9), len(train)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images-per-class", type=int, default=120)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="keep the jobs here (default: a temp dir)")
    args = p.parse_args(argv)
    print(machine_note(), flush=True)
    if not torch.cuda.is_available():
        from container_train.distributed import cuda_problem

        print(f"not measured: no usable CUDA here ({cuda_problem()})")
        return 0
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    from byoc.datasets.synthetic import make_dataset
    from byoc.local.multi_host import local_training_job

    root = args.out or Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    data = make_dataset(root / "data", num_classes=args.classes,
                        per_class={"train": args.images_per_class, "valid": 10, "test": 2}, size=256)
    hp = {"arch": "resnet50", "pretrained": "false", "freeze": "none", "epochs": args.epochs,
          "image-size": 224, "debugger": "false", "checkpoint": "false"}
    rows = []
    for name, distribution in (("plain (python train.py)", None), ("torchrun, world size 1", "torch_distributed")):
        job = local_training_job(root / name.split()[0], hp, {"training": data}, 1, distribution)
        result = job.start().wait(timeout=540)
        if not result.ok:
            print(f"{name}: failed: {result.failure_reason}\n{result.log_text[-3000:]}")
            return 1
        ips, wait, steps = step_figures(result.output_data_dir)
        metrics = result.metrics
        rows.append([name, ips, 100 * wait, steps, metrics["device"], metrics.get("world_size", 1)])
    print_table(f"ResNet50 fine-tuning, 224 px, defaults ({args.classes * args.images_per_class} images x "
                f"{args.epochs} epochs)", ["launch", "train img/s", "data wait %", "steps", "device", "world"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
