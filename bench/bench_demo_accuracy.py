"""What the offline demo can reach: test accuracy of a linear head on EfficientNet-Lite0's real
ImageNet features (Fashion-MNIST, 10 classes) against images per class and input size.

The demo trains a head on a frozen backbone (``freeze=head``), so its ceiling is a linear probe on
the backbone's pooled features. This script measures that ceiling on a grid, with the trainer's own
pieces: the same Fashion-MNIST export as ``byoc data`` (:mod:`byoc.datasets.fashion_mnist`), the
same evaluation transform (:func:`byoc_common.preprocessing.eval_transform`), the same pretrained
weights (:func:`container_train.pretrained.build_model`) and the same feature extraction
(:func:`container_train.feature_extraction.compute_features`). The head is fit by full-batch
L-BFGS with a small L2 penalty chosen on the validation split, so each point is the best a linear
head can do there, not what a given learning rate happens to reach. Extraction speed (images/s)
is printed too: it is what the demo pays per image and view.

    .venv/bin/python -m bench.bench_demo_accuracy                      # the grid in RESULTS.md
    .venv/bin/python -m bench.bench_demo_accuracy --sizes 64 96 --per-class 30 100 --crops 1.0
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench.common import machine_note, print_table
from byoc.datasets.fashion_mnist import export_imagefolder
from byoc_common.architectures import split_backbone_head
from byoc_common.artifact import ModelConfig
from byoc_common.preprocessing import eval_transform
from container_train.data import ImageFolderDataset, load_splits
from container_train.feature_extraction import compute_features
from container_train.pretrained import build_model

ARCH = "efficientnet_lite0"
PENALTIES = (1e-4, 1e-3, 1e-2)


def features_of(root: Path, size: int, resize: int, batch_size: int = 64) -> tuple[dict, float]:
    """Pooled features of every split under ``root`` at input ``size`` after resizing to ``resize``
    (then centre-cropping to ``size``); returns (features, images/s)."""
    splits = load_splits({"training": root})
    model = build_model(ARCH, len(splits["train"].class_names), pretrained=True, freeze="head")
    extractor, _ = split_backbone_head(model, ARCH)
    config = ModelConfig(arch=ARCH, num_classes=len(splits["train"].class_names), image_size=size,
                         resize_size=resize)
    out, images, start = {}, 0, time.perf_counter()
    for name, split in splits.items():
        fs = compute_features(extractor.eval(), ImageFolderDataset(split, eval_transform(config)),
                              batch_size=batch_size, log=None)
        out[name] = (fs.features[0], fs.labels)
        images += len(fs)
    return out, images / (time.perf_counter() - start)


def fit_linear_head(x: torch.Tensor, y: torch.Tensor, classes: int, penalty: float) -> nn.Linear:
    head = nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=200, line_search_fn="strong_wolfe")
    loss_fn = nn.CrossEntropyLoss()

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(head(x), y) + penalty * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head


def accuracy(head: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((head(x).argmax(1) == y).float().mean())


def probe(feats: dict, per_class: int, classes: int) -> tuple[float, float]:
    """(validation accuracy, test accuracy) of the best-penalty head trained on ``per_class`` images a class."""
    x, y = feats["train"]
    keep = torch.cat([torch.nonzero(y == c).flatten()[:per_class] for c in range(classes)])
    best = None
    for penalty in PENALTIES:
        head = fit_linear_head(x[keep], y[keep], classes, penalty)
        valid = accuracy(head, *feats["valid"])
        if best is None or valid > best[0]:
            best = (valid, accuracy(head, *feats["test"]))
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128], help="input sizes (pixels)")
    ap.add_argument("--per-class", type=int, nargs="+", default=[30, 100, 200, 400],
                    help="training images per class")
    ap.add_argument("--crops", type=float, nargs="+", default=[224 / 256, 1.0],
                    help="centre-crop share of the resized image (224/256: ImageNet's, the trainer's default; "
                         "1.0: no crop, resize-size = image-size)")
    ap.add_argument("--eval-per-class", type=int, default=100, help="validation and test images per class")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_note(), f"torch threads {torch.get_num_threads()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            root = export_imagefolder(Path(tmp) / f"s{size}", per_class={
                "train": max(args.per_class), "valid": args.eval_per_class, "test": args.eval_per_class}, size=size)
            for crop in args.crops:
                resize = round(size / crop)       # 224/256 -> ModelConfig.default_resize(size)
                feats, rate = features_of(root, size, resize)
                classes = int(feats["train"][1].max()) + 1
                for per_class in args.per_class:
                    valid, test = probe(feats, per_class, classes)
                    rows.append([size, resize, per_class, f"{valid:.3f}", f"{test:.3f}", f"{rate:.0f}"])
                    print(rows[-1], flush=True)
    print_table(f"Linear head on {ARCH} ImageNet features, Fashion-MNIST 10 classes "
                f"({args.eval_per_class} validation and test images a class)",
                ["input px", "resize px", "train images/class", "valid acc", "test acc", "extraction img/s"], rows)


if __name__ == "__main__":
    main()
