"""Does this CPU run bfloat16 natively? One answer for both images.

Training (``container_train.precision``: bf16 autocast or float32) and serving
(``container_serve.model_form``: the bf16 served form or float32) must agree on one host, so both ask
here, and get the answer oneDNN's kernels act on, through torch's probes: AVX-512 BF16 (Cooper Lake,
Zen 4) or AMX tiles (Sapphire Rapids: SageMaker's ml.c7i / ml.m7i). Before, training read
``/proc/cpuinfo`` and serving asked torch, and the two could disagree on one host. Without these
features bf16 runs emulated, slower than float32.
"""

from __future__ import annotations

# feature name (as in /proc/cpuinfo and the logs) -> torch's probe for it
_PROBES = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_tile": "_is_amx_tile_supported"}


def native_bf16_features() -> tuple[str, ...]:
    """The features that give this CPU native bf16 (empty where it has none, or torch cannot tell)."""
    import torch

    found = []
    for name, probe in _PROBES.items():
        check = getattr(torch.cpu, probe, None)   # private probes: absent in an older torch
        if check is not None and check():
            found.append(name)
    return tuple(found)


def cpu_has_bf16() -> bool:
    return bool(native_bf16_features())
