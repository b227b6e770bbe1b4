"""bfloat16 vs float32 fine-tuning on this CPU: images/s and validation accuracy after the same epochs.

The real trainer (``byoc.local.training_job.run_training_job``, process mode) runs ResNet50 with
``freeze=none`` (full fine-tuning) and ``freeze=layer4`` (the last stage and the head), once with
``amp=true`` (bfloat16 autocast + channels-last where the CPU has native bf16: see
``container_train/precision.py``) and once with ``amp=false`` (float32), on the same Fashion-MNIST
images, seed and epochs. Variants run one after the other in this process, in rounds
(fp32, bf16, fp32, bf16, ...) so a change in machine load hits both. Reported per variant: the
median steady training images/s over the rounds (from ``metrics.json``: the trainer's own timing of
each epoch, the first epoch excluded when there are more than one), and validation accuracy after
the last epoch. No ImageNet ResNet50 weights are reachable offline, so ResNet50 starts from random
weights (its accuracy says little); ``--arch efficientnet_lite0 --pretrained true`` fine-tunes real
ImageNet weights, whose accuracy after the same epochs is the one to compare.

    .venv/bin/python -m bench.bench_bf16_training                  # the figures in RESULTS.md
    .venv/bin/python -m bench.bench_bf16_training --arch efficientnet_lite0 --pretrained true --lr 0.005
    .venv/bin/python -m bench.bench_bf16_training --rounds 1 --per-class 20 --epochs 1   # quick look
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.common import machine_note, prepare_demo_data, print_table
from byoc_common.cpu_features import native_bf16_features


def run_variant(work: Path, data: Path, freeze: str, amp: bool, args, round_no: int) -> dict:
    from byoc.local.training_job import run_training_job

    hps = {"arch": args.arch, "pretrained": args.pretrained, "freeze": freeze, "amp": str(amp).lower(),
           "epochs": str(args.epochs), "batch-size": str(args.batch_size), "image-size": str(args.image_size),
           "lr": str(args.lr), "lr-scheduler": "none", "debugger": "false", "checkpoint": "false", "seed": "0"}
    job = run_training_job(work / f"{freeze}-{'bf16' if amp else 'fp32'}-{round_no}", hps, {"training": data},
                           timeout=3600)
    if job.returncode != 0:
        raise SystemExit(f"{freeze} amp={amp} failed: {job.failure_reason}\n{job.log_text[-2000:]}")
    history = job.metrics["history"]
    steady = history[1:] if len(history) > 1 else history
    return {"img_per_s": statistics.median(h["train_images_per_s"] for h in steady),
            "valid_acc": history[-1]["valid_acc"], "valid_loss": history[-1]["valid_loss"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--per-class", type=int, default=30, help="training images per class (10 classes)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pretrained", default="false",
                    help="true: ImageNet weights (offline only efficientnet_lite0 has them), for an accuracy that "
                         "means something")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--freeze", nargs="+", default=["none", "layer4"])
    args = ap.parse_args(argv)
    flags = native_bf16_features()
    print(f"# bench_bf16_training: {machine_note()}; CPU bf16 flags: {', '.join(flags) or 'none'}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data, source = prepare_demo_data(work / "data", {"train": args.per_class, "valid": 10, "test": 2},
                                         size=args.image_size, num_classes=10)
        results: dict[tuple[str, bool], list[dict]] = {}
        for round_no in range(args.rounds):
            for freeze in args.freeze:
                for amp in (False, True):
                    r = run_variant(work, data, freeze, amp, args, round_no)
                    results.setdefault((freeze, amp), []).append(r)
                    print(f"round {round_no + 1} freeze={freeze} {'bf16' if amp else 'fp32'}: {r}", flush=True)
    rows = []
    for freeze in args.freeze:
        fp32, bf16 = results[(freeze, False)], results[(freeze, True)]
        speed = [statistics.median(r["img_per_s"] for r in rs) for rs in (fp32, bf16)]
        rows.append([freeze, f"{speed[0]:.2f}", f"{speed[1]:.2f}", f"{speed[1] / speed[0]:.2f}x",
                     f"{fp32[-1]['valid_acc']:.3f}", f"{bf16[-1]['valid_acc']:.3f}"])
    start = "ImageNet weights" if args.pretrained == "true" else "random weights"
    print_table(f"{args.arch} from {start}, lr {args.lr}, {source} {args.per_class}/class at {args.image_size} px, "
                f"batch {args.batch_size}, {args.epochs} epochs, median of {args.rounds} rounds",
                ["freeze", "fp32 img/s", "bf16 img/s", "bf16 / fp32", "fp32 valid acc", "bf16 valid acc"], rows)


if __name__ == "__main__":
    main()
