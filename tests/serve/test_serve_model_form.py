"""The served form of the network (container_serve.model_form) against the float32 network it comes from.

A ResNet18 is trained here on the generated shapes (a few epochs, so its predictions have the margins of a
real model) and saved as an artifact; held-out images it never saw go through the server's decoder and
both forms: top-1 agreement and the probability tolerance are the contract model_form states.
"""

from __future__ import annotations

import io
import logging
import random

import pytest
import torch

from byoc.datasets.synthetic import draw_example
from byoc_common.architectures import build_classifier
from byoc_common.artifact import ModelArtifactError, ModelConfig, load_model_artifact, save_model_artifact
from container_serve import model_form
from container_serve.core_slots import CoreSlots, make_slot_files
from container_serve.decoding import ImageDecoder

CLASSES = 4
SIZE = 64
HELD_OUT = 200
needs_bf16 = pytest.mark.skipif(not model_form.cpu_has_bf16(), reason="this CPU has no native bf16")


def _jpeg(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _images(decoder: ImageDecoder, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = random.Random(seed)
    x = [decoder.decode(_jpeg(draw_example(i % CLASSES, CLASSES, rng, size=80)), "image/jpeg")[0] for i in range(n)]
    return torch.stack(x), torch.tensor([i % CLASSES for i in range(n)])


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = ModelConfig("resnet18", CLASSES, image_size=SIZE, resize_size=ModelConfig.default_resize(SIZE))
    decoder = ImageDecoder(config)
    x, y = _images(decoder, 160, seed=1)
    net = build_classifier("resnet18", CLASSES)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    net.train()
    for _ in range(3):
        for idx in torch.randperm(len(x)).split(16):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return save_model_artifact(tmp_path_factory.mktemp("form") / "model", net,
                               [f"c{i}" for i in range(CLASSES)], config)


def _both(model_dir, form: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    reference, _, config = load_model_artifact(model_dir)
    served, _, _ = model_form.load_served_model(model_dir, form)
    x, _ = _images(ImageDecoder(config), HELD_OUT, seed=2)  # held out: another seed than the training set
    with torch.inference_mode():
        return torch.softmax(reference(x), dim=1), torch.softmax(served(x), dim=1), served.form


@needs_bf16
def test_bf16_form_agrees_with_float32_on_held_out_images(trained_dir):
    expected, got, form = _both(trained_dir, model_form.BF16)
    assert form == model_form.BF16
    agreement = (expected.argmax(1) == got.argmax(1)).float().mean().item()
    per_image = (expected - got).abs().amax(dim=1)
    assert agreement >= model_form.BF16_MIN_TOP1_AGREEMENT, agreement
    assert per_image.max().item() <= model_form.BF16_MAX_PROBABILITY_DIFF, per_image.max()
    assert per_image.median().item() <= model_form.BF16_MEDIAN_PROBABILITY_DIFF, per_image.median()


def test_fp32_form_is_the_trained_network(trained_dir):
    expected, got, form = _both(trained_dir, model_form.FP32)
    assert form == model_form.FP32
    assert torch.allclose(got, expected, atol=1e-6)


def test_bf16_falls_back_to_plain_weights_with_a_log_line_on_a_cpu_without_it(trained_dir, monkeypatch, caplog):
    monkeypatch.setattr(model_form, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger=model_form.__name__):
        served, _, _ = model_form.load_served_model(trained_dir, model_form.BF16)
    assert served.form == model_form.FP32
    assert "no native bf16" in caplog.text and "float32" in caplog.text
    caplog.clear()
    served, _, _ = model_form.load_served_model(trained_dir, model_form.AUTO)  # auto says nothing: its choice
    assert served.form == model_form.FP32 and caplog.text == ""


def test_a_failed_conversion_falls_back_to_plain_weights(trained_dir, monkeypatch, caplog):
    monkeypatch.setattr(model_form, "cpu_has_bf16", lambda: True)

    def broken(module):
        raise RuntimeError("no bf16 kernel here")

    monkeypatch.setattr(model_form, "fold_batchnorm", broken)
    with caplog.at_level(logging.WARNING, logger=model_form.__name__):
        served, _, _ = model_form.load_served_model(trained_dir, model_form.AUTO)
    assert served.form == model_form.FP32 and "no bf16 kernel here" in caplog.text


def test_weights_of_another_shape_are_an_artifact_error(trained_dir, tmp_path):
    import shutil

    bad = tmp_path / "model"
    shutil.copytree(trained_dir, bad)
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad / "model.pth")
    with pytest.raises(ModelArtifactError, match="does not load"):
        model_form.load_served_model(bad, model_form.AUTO)


def test_folding_batchnorm_removes_every_batchnorm_and_keeps_the_output():
    torch.manual_seed(0)
    net = build_classifier("resnet18", 3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        before = net(x)
        folded = model_form.fold_batchnorm(net)
        after = folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(before, after, atol=1e-4)


def test_core_slots_give_a_lone_worker_every_core_and_a_second_one_the_rest(tmp_path):
    make_slot_files(tmp_path, 2)
    idle = tmp_path / "loadavg"
    idle.write_text("0.00 0.00 0.00 1/100 4242\n")  # an idle host (test_serve_core_slots.py: a busy one)
    first, second = CoreSlots(tmp_path, 1, 2, idle), CoreSlots(tmp_path, 1, 2, idle)
    try:
        with first.threads() as alone:
            assert alone == 2
            with second.threads() as crowded:
                assert crowded == 1  # never fewer than the minimum, even with no core free
        with second.threads() as again:
            assert again == 2        # released
    finally:
        first.close()
        second.close()
    fixed = CoreSlots(None, 1, 4)
    with fixed.threads() as n:
        assert n == 1 and not fixed.adaptive  # no slot folder: the minimum, as before


def test_the_form_and_thread_knobs_are_settings(tmp_path):
    from container_serve.mms_process import worker_environment
    from container_serve.settings import ServeSettings, SettingsError, cpu_count

    s = ServeSettings.from_env({})
    assert (s.model_form, s.torch_threads, s.max_torch_threads, s.omp_wait_policy) == ("auto", 1, cpu_count(), "PASSIVE")
    s = ServeSettings.from_env({"BYOC_MODEL_FORM": "FP32", "BYOC_MAX_TORCH_THREADS": "1",
                                "BYOC_OMP_WAIT_POLICY": "active"})
    assert (s.model_form, s.max_torch_threads, s.omp_wait_policy) == ("fp32", 1, "ACTIVE")
    assert ServeSettings.from_env({"BYOC_TORCH_THREADS": "3", "BYOC_MAX_TORCH_THREADS": "1"}).max_torch_threads == 3
    for name, value in (("BYOC_MODEL_FORM", "int8"), ("BYOC_OMP_WAIT_POLICY", "spin"),
                        ("BYOC_MAX_TORCH_THREADS", "0")):
        with pytest.raises(SettingsError, match=name):
            ServeSettings.from_env({name: value})
    env = worker_environment(ServeSettings.from_env({}), tmp_path, False)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["BYOC_CORE_SLOTS_DIR"] == str(tmp_path / "core-slots")
    assert ServeSettings.from_env(env).core_slots_dir == tmp_path / "core-slots"
