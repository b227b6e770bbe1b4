"""Mixed precision, chosen per job from the ``amp`` hyperparameter and what the device can do.

* GPU: float16 autocast with a gradient scaler (the usual CUDA recipe).
* CPU with bfloat16 arithmetic (AVX-512 BF16 or AMX: SageMaker's ml.c7i / ml.m7i, Sapphire Rapids
  and later): bfloat16 autocast and channels-last memory, which oneDNN's bf16 convolutions want.
  bfloat16 keeps float32's exponent range, so no gradient scaler is needed.
* CPU without them: float32, with a log line saying why (bf16 would be emulated, slower than fp32).
* ``freeze=head``: the head trains in float32 on cached backbone features; the frozen backbone computes
  them once in the precision it would train in (:func:`extraction_autocast`: bfloat16 on such a CPU,
  float16 on a GPU). The serving image runs the same bf16 backbone on such a CPU, so the head learns
  from the features it will be served; the cache key records the dtype, so features of two
  precisions never mix.

PyTorch's CPU autocast: https://pytorch.org/docs/stable/amp.html#cpu-op-specific-behavior
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from byoc_common import cpu_features


@dataclass(frozen=True)
class Precision:
    autocast_dtype: torch.dtype | None       # None: float32
    channels_last: bool
    grad_scaler: bool                        # float16 needs one, bfloat16 does not
    note: str                                # the log line that says what was chosen and why

    @property
    def mixed(self) -> bool:
        return self.autocast_dtype is not None


def choose_precision(device: torch.device, amp: bool, freeze: str, cpu_flags=None) -> Precision:
    """``cpu_flags``: the CPU's native bf16 features (default: this host's, the probe serving uses too)."""
    if not amp:
        return Precision(None, False, False, "mixed precision off (amp=false): float32")
    if device.type == "cuda":
        return Precision(torch.float16, False, True, "mixed precision: float16 autocast with a gradient scaler")
    if freeze == "head":
        backbone = choose_precision(device, amp, "none", cpu_flags)
        return Precision(None, False, False, "float32: only the head trains (freeze=head), on cached features; "
                                             f"the backbone computes them once with {backbone.note}")
    flags = cpu_features.native_bf16_features() if cpu_flags is None else cpu_flags
    if not flags:
        return Precision(None, False, False, "float32: this CPU has no bfloat16 arithmetic (no AVX-512 BF16 or "
                                             "AMX), where bf16 would be slower than float32")
    return Precision(torch.bfloat16, True, False,
                     f"mixed precision: bfloat16 autocast and channels-last memory (CPU has {', '.join(flags)})")


def extraction_autocast(device: torch.device, amp: bool, cpu_flags=None) -> torch.dtype | None:
    """The dtype a frozen backbone computes cached features in: the one it would train in
    (``choose_precision`` with the backbone learning), None for float32. bf16 doubles the demo's
    extraction rate on an AVX-512 BF16 CPU (bench/bench_extraction.py)."""
    return choose_precision(device, amp, "none", cpu_flags).autocast_dtype
