"""byoc package: a flat model.tar.gz holding only the artifact files."""

from __future__ import annotations

import tarfile

import pytest

from byoc.cli import main
from byoc_common.architectures import build_classifier
from byoc_common.artifact import ModelConfig, save_model_artifact


@pytest.fixture
def model_dir(tmp_path):
    model = build_classifier("resnet18", 3)
    return save_model_artifact(tmp_path / "model", model, ["a", "b", "c"],
                               ModelConfig(arch="resnet18", num_classes=3, image_size=32))


def test_package_is_flat(model_dir, tmp_path, capsys):
    out = tmp_path / "pkg" / "m.tar.gz"
    assert main(["package", str(model_dir), "-o", str(out)]) == 0
    with tarfile.open(out) as tar:
        assert sorted(tar.getnames()) == ["classes.json", "model.pth", "model_config.json"]
    assert "wrote" in capsys.readouterr().out


def test_package_refuses_a_non_artifact(tmp_path, capsys):
    (tmp_path / "notamodel").mkdir()
    assert main(["package", str(tmp_path / "notamodel")]) == 1
    assert "missing model.pth" in capsys.readouterr().err
