"""The pieces of bench/bench_serve_image.py and bench/bench_ddp_scaling.py that decide what is compared:
the background load ends with its block, the ratios pick TorchServe's best setting per figure, the DDP
variant names map to the options the trainer's DDP takes."""

from __future__ import annotations

import psutil
import pytest

from bench.bench_ddp_scaling import parse_variant
from bench.bench_serve_image import ratio_rows, varied_jpegs
from bench.common import background_load
from container_train.distributed import DdpOptions


def test_the_background_load_is_one_process_per_core_and_gone_after_its_block():
    me = psutil.Process()
    before = {p.pid for p in me.children()}
    with background_load(True, 60):
        busy = [p for p in me.children() if p.pid not in before]
        assert len(busy) == psutil.cpu_count()
        assert all(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in busy)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in busy)
    with background_load(False, 60):
        assert {p.pid for p in me.children()} == before


def test_ratios_are_against_the_best_torchserve_setting_for_each_figure():
    s = {("ours", 1): {"p50_ms": 40.0}, ("ours", 16): {"req_per_s": 30.0, "p99_ms": 500.0},
         ("ts a", 1): {"p50_ms": 100.0}, ("ts a", 16): {"req_per_s": 10.0, "p99_ms": 2000.0},
         ("ts b", 1): {"p50_ms": 50.0}, ("ts b", 16): {"req_per_s": 20.0, "p99_ms": 1000.0}}
    assert ratio_rows(s, ["ours"], ["ts a", "ts b"]) == [["ours", "0.80x", "1.50x", "0.50x"]]


def test_varied_images_differ():
    images = varied_jpegs(5)
    assert len(set(images)) == 5 and all(b[:2] == b"\xff\xd8" for b in images)


def test_ddp_variant_names():
    assert parse_variant("default") == DdpOptions()
    assert parse_variant("bf16+view+bucket=5") == DdpOptions(bucket_cap_mb=5.0, gradient_as_bucket_view=True,
                                                             compression="bf16")
    with pytest.raises(ValueError, match="compression"):
        parse_variant("int8")
