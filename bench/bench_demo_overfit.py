"""How far the demo's validation loss runs above its training loss, per epoch, for a few regularisers:
what the Debugger's Overfit rule (ratio_threshold 0.1) reads on the demo's healthy run.

The real trainer (``byoc.local.training_job.run_training_job``, process mode) trains the demo's head
(EfficientNet-Lite0, ``freeze=head``, 96 px, no centre crop) on a Fashion-MNIST export of the demo's
size, once per variant, one after the other, all variants sharing one feature cache (so only the
first run, and a variant with augmented views, pays for the extraction). Printed per variant: test
accuracy, validation accuracy per epoch and ``(valid_loss - train_loss) / train_loss`` per epoch.

    .venv/bin/python -m bench.bench_demo_overfit                                    # RESULTS.md's table
    .venv/bin/python -m bench.bench_demo_overfit --variant ls=label-smoothing:0.1,epochs:6
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import machine_note, print_table
from byoc.datasets.fashion_mnist import export_imagefolder

BASE = {"arch": "efficientnet_lite0", "pretrained": "true", "freeze": "head", "optimizer": "sgd",
        "image-size": "96", "resize-size": "96", "epochs": "8", "lr": "0.003", "batch-size": "32",
        "debugger": "false", "checkpoint": "false"}
VARIANTS = ("plain=", "views1=feature-cache-views:1", "wd=weight-decay:0.003,epochs:6", "lr=lr:0.001,epochs:4",
            "ls=label-smoothing:0.1,epochs:6", "lswd=label-smoothing:0.1,weight-decay:0.001")


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``name=key:value,key:value`` -> (name, hyperparameters)."""
    name, _, rest = text.partition("=")
    return name, dict(item.split(":", 1) for item in rest.split(",") if item)


def main(argv: list[str] | None = None) -> None:
    from byoc.local.training_job import run_training_job

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", help=f"name=hp:value,... (default: {' '.join(VARIANTS)})")
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--eval-per-class", type=int, default=100)
    args = ap.parse_args(argv)
    print(machine_note(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = export_imagefolder(work / "data", per_class={"train": args.per_class, "valid": args.eval_per_class,
                                                            "test": args.eval_per_class}, size=96)
        for name, extra in map(parse_variant, args.variant or VARIANTS):
            job = run_training_job(work / name, {**BASE, **extra}, {"training": data}, timeout=3600,
                                   feature_cache_dir=work / "cache")
            if job.returncode != 0:
                raise SystemExit(f"{name} failed: {job.failure_reason}")
            history = job.metrics["history"]
            gaps = ", ".join(f"{(h['valid_loss'] - h['train_loss']) / h['train_loss']:.2f}" for h in history)
            rows.append([name, " ".join(f"{k}={v}" for k, v in extra.items()) or "(demo base)", len(history),
                         f"{job.metrics['test']['accuracy']:.3f}", f"{history[-1]['valid_acc']:.3f}", gaps])
            print(rows[-1], flush=True)
    print_table("Validation loss above training loss, per epoch (Overfit fires above 0.10)",
                ["variant", "hyperparameters", "epochs", "test acc", "last valid acc", "(valid-train)/train"], rows)


if __name__ == "__main__":
    main()
