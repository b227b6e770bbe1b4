"""Feature extraction against the bare forward pass it is made of (issue 25: "get within 1.5x of the floor").

The demo's extraction (EfficientNet-Lite0 at 96 px, batch 32, the trainer's loader plan: 2 workers) runs
:func:`container_train.feature_extraction.compute_features` over real images from disk: JPEG decode,
resize, normalise, the backbone, features copied out. Its floor is the same backbone on the same batch
size and memory form, on tensors already in memory: what the extraction would do with free data loading.

Variants, side by side in one run, each in both conditions (``quiet``, and ``loaded``: one busy process
per core started by this bench, :func:`bench.common.background_load`):

* ``fp32 NCHW``: the extraction before issue 25's change (plain memory layout, float32);
* ``fp32 channels-last``: the CPU default where the CPU has no bf16 arithmetic;
* ``bf16 channels-last``: the default on a CPU with AVX-512 BF16 / AMX (``precision.extraction_autocast``).

Printed: images/s of the extraction and of its floor, floor / extraction (1.0 = data loading costs
nothing), and each variant's extraction rate against ``fp32 NCHW``'s.

    .venv/bin/python -m bench.bench_extraction                 # 2,000 images, ~3 min on 2 cores
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.common import background_load, machine_note, prepare_demo_data, print_table
from byoc_common.architectures import build_classifier, split_backbone_head
from byoc_common.artifact import ModelConfig
from byoc_common.preprocessing import eval_transform
from container_train import feature_extraction
from container_train.data import ImageFolderDataset, scan_split
from container_train.loader_limits import plan_loading

ARCH, SIZE = "efficientnet_lite0", 96
VARIANTS = {   # name -> (memory format on the CPU, autocast dtype)
    "fp32 NCHW": (torch.contiguous_format, None),
    "fp32 channels-last": (torch.channels_last, None),
    "bf16 channels-last": (torch.channels_last, torch.bfloat16),
}


def extraction_rate(extractor, dataset, batch_size: int, memory_format, dtype) -> float:
    """Images/s of compute_features over ``dataset`` with the trainer's loader plan."""
    saved = dict(feature_extraction.EXTRACTION_MEMORY_FORMAT)
    feature_extraction.EXTRACTION_MEMORY_FORMAT["cpu"] = memory_format
    try:
        plan = plan_loading(2, batch_size, SIZE, timeout_s=600)
        started = time.perf_counter()
        fs = feature_extraction.compute_features(extractor, dataset, batch_size=batch_size, plan=plan, log=None,
                                                 autocast_dtype=dtype)
        return len(fs) / (time.perf_counter() - started)
    finally:
        feature_extraction.EXTRACTION_MEMORY_FORMAT.update(saved)


@torch.inference_mode()
def floor_rate(extractor, batch: torch.Tensor, memory_format, dtype, seconds: float) -> float:
    """Images/s of the bare forward pass on one in-memory batch, repeated for ``seconds``."""
    model = extractor.eval().to(memory_format=memory_format)
    x = batch.contiguous(memory_format=memory_format)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        model(x)                                         # warm-up: oneDNN picks its kernels
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            model(x)
            done += x.shape[0]
    extractor.to(memory_format=torch.contiguous_format)
    return done / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000, help="training images (10 classes)")
    p.add_argument("--batch-size", type=int, default=32, help="the demo spec's batch size")
    p.add_argument("--floor-seconds", type=float, default=8.0)
    args = p.parse_args(argv)
    print(machine_note(), flush=True)
    torch.manual_seed(0)
    extractor, _ = split_backbone_head(build_classifier(ARCH, 10), ARCH)
    with tempfile.TemporaryDirectory(prefix="bench-extraction-") as tmp:
        root, source = prepare_demo_data(Path(tmp) / "data", {"train": args.images // 10, "valid": 1, "test": 1},
                                         SIZE, 10)
        dataset = ImageFolderDataset(scan_split("train", root / "train"),
                                     eval_transform(ModelConfig(ARCH, 10, SIZE, SIZE)))
        batch = torch.stack([dataset[i][0][0] for i in range(args.batch_size)])
        rows, base = [], {}
        for condition in ("quiet", "loaded"):
            with background_load(condition == "loaded", seconds=600):
                for name, (memory_format, dtype) in VARIANTS.items():
                    rate = extraction_rate(extractor, dataset, args.batch_size, memory_format, dtype)
                    floor = floor_rate(extractor, batch, memory_format, dtype, args.floor_seconds)
                    base.setdefault(condition, rate)
                    rows.append([condition, name, rate, floor, f"{floor / rate:.2f}x",
                                 f"{rate / base[condition]:.2f}x"])
                    print(f"{condition} {name}: extraction {rate:.0f} img/s, floor {floor:.0f} img/s", flush=True)
    print_table(f"Feature extraction vs its floor: {ARCH} at {SIZE} px, batch {args.batch_size}, "
                f"{len(dataset)} {source} images, {torch.get_num_threads()} threads",
                ["condition", "variant", "extraction img/s", "floor img/s", "floor / extraction",
                 "extraction vs fp32 NCHW"], rows)


if __name__ == "__main__":
    main()
