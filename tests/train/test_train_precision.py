"""Mixed precision by device and CPU (container_train/precision.py), and a real bf16 step."""

from __future__ import annotations

import pytest
import torch

from container_train import engine
from container_train.data import Batch, SkipCounter
from container_train.precision import choose_precision, extraction_autocast

CPU = torch.device("cpu")


def test_cpu_with_bf16_trains_in_bfloat16_channels_last():
    p = choose_precision(CPU, amp=True, freeze="none", cpu_flags=["avx512_bf16"])
    assert p.autocast_dtype is torch.bfloat16 and p.channels_last and not p.grad_scaler
    assert "avx512_bf16" in p.note


def test_cpu_without_bf16_stays_float32_and_says_why():
    p = choose_precision(CPU, amp=True, freeze="layer4", cpu_flags=[])
    assert not p.mixed and "no bfloat16 arithmetic" in p.note


@pytest.mark.parametrize("amp, freeze, expected", [(False, "none", "amp=false"), (True, "head", "freeze=head")])
def test_float32_when_off_or_head_only(amp, freeze, expected):
    p = choose_precision(CPU, amp=amp, freeze=freeze, cpu_flags=["amx_bf16"])
    assert not p.mixed and expected in p.note


def test_a_frozen_backbone_computes_its_features_in_the_precision_it_would_train_in():
    """freeze=head: the head trains in float32; the features come from the backbone's own precision
    (bf16 where the CPU has it, as the serving image runs it), and the job's log line says so."""
    assert extraction_autocast(CPU, True, cpu_flags=["amx_bf16"]) is torch.bfloat16
    assert extraction_autocast(CPU, True, cpu_flags=[]) is None
    assert extraction_autocast(CPU, False, cpu_flags=["amx_bf16"]) is None
    assert extraction_autocast(torch.device("cuda"), True, cpu_flags=[]) is torch.float16
    note = choose_precision(CPU, amp=True, freeze="head", cpu_flags=["amx_bf16"]).note
    assert "freeze=head" in note and "bfloat16 autocast" in note


def test_gpu_uses_float16_with_a_scaler():
    p = choose_precision(torch.device("cuda"), amp=True, freeze="none", cpu_flags=[])
    assert p.autocast_dtype is torch.float16 and p.grad_scaler


def test_a_bf16_channels_last_training_step_learns():
    """The engine's loop under bf16 autocast (run even where the CPU emulates bf16: it is correct,
    only slower) lowers the loss of a small conv net on a fixed batch."""
    torch.manual_seed(0)
    precision = choose_precision(CPU, amp=True, freeze="none", cpu_flags=["avx512_bf16"])
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 3)).to(memory_format=torch.channels_last)
    labels = torch.arange(12) % 3
    images = torch.randn(12, 3, 16, 16) + 2 * torch.nn.functional.one_hot(labels, 3).float()[:, :, None, None]
    batches = [Batch(images, labels, [])] * 20
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    common = dict(criterion=torch.nn.CrossEntropyLoss(), device=CPU, precision=precision, timings=None,
                  skipped=SkipCounter(), stop=engine.StopFlag())
    before = engine.evaluate(model, batches[:1], epoch=0, total_steps=1, split="valid", **common)
    engine.train_one_epoch(model, batches, optimizer=opt, scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1),
                           scaler=torch.amp.GradScaler("cpu", enabled=False), epoch=1, epochs=1, total_steps=20,
                           set_train_mode=lambda m: m.train(), log_interval_s=60, **common)
    after = engine.evaluate(model, batches[:1], epoch=1, total_steps=1, split="valid", **common)
    assert after.loss < 0.7 * before.loss
