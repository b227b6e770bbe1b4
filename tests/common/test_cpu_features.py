"""Both images decide bf16 from the one probe (byoc_common.cpu_features), so they agree on a host."""

from __future__ import annotations

import pytest
import torch

from byoc_common import cpu_features
from container_serve import model_form
from container_train.precision import choose_precision


def test_the_probe_names_known_features_and_agrees_with_torch():
    found = cpu_features.native_bf16_features()
    assert set(found) <= {"avx512_bf16", "amx_tile"}
    assert cpu_features.cpu_has_bf16() == bool(torch.cpu._is_avx512_bf16_supported()
                                                or torch.cpu._is_amx_tile_supported())


@pytest.mark.parametrize("features", [(), ("amx_tile",)])
def test_training_and_serving_choose_bf16_on_the_same_hosts(monkeypatch, features):
    monkeypatch.setattr(cpu_features, "native_bf16_features", lambda: features)
    monkeypatch.setattr(model_form, "cpu_has_bf16", cpu_features.cpu_has_bf16)   # the serving module's name for it
    trains_bf16 = choose_precision(torch.device("cpu"), amp=True, freeze="none").autocast_dtype is torch.bfloat16
    serves_bf16 = model_form.choose_form(model_form.AUTO)[0] == model_form.BF16
    assert trains_bf16 == serves_bf16 == bool(features)
