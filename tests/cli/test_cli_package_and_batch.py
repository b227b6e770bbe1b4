"""byoc package (flat model.tar.gz) and the batch-transform file semantics (one <input>.out per input)."""

from __future__ import annotations

import json
import tarfile

import pytest

from byoc.cli import main
from byoc.local.client import EndpointError, transform_folder, write_gradcam_png
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


def test_transform_folder_writes_one_out_per_input(tmp_path):
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    (inp / "a.jpg").write_bytes(b"A")
    (inp / "sub" / "b.png").write_bytes(b"B")
    (inp / "big.jpg").write_bytes(b"x" * (1024 * 1024 + 1))
    (inp / "notes.txt").write_text("ignored: not an input type")
    (inp / "bad.jpg").write_bytes(b"BAD")
    seen = []

    def invoke(body, content_type, accept, target):
        seen.append((body, content_type, target))
        if body == b"BAD":
            raise EndpointError("HTTP 400: cannot decode image", 400)
        return "application/json", json.dumps({"echo": body.decode()}).encode()

    result = transform_folder(invoke, inp, tmp_path / "out", "m1", None, "application/json", max_payload_mb=1)
    outs = sorted(p.relative_to(tmp_path / "out").as_posix() for p in result.outputs)
    assert outs == ["a.jpg.out", "sub/b.png.out"]
    assert json.loads((tmp_path / "out" / "sub" / "b.png.out").read_text()) == {"echo": "B"}
    assert set(result.failures) == {"big.jpg", "bad.jpg"}
    assert "MaxPayloadInMB=1" in result.failures["big.jpg"]
    # Content type from each file's extension; the big file is never sent.
    assert sorted((body[:3], ctype, target) for body, ctype, target in seen) == [
        (b"A", "image/jpeg", "m1"), (b"B", "image/png", "m1"), (b"BAD", "image/jpeg", "m1")]


def test_gradcam_answer_without_heatmap_is_an_error(tmp_path):
    with pytest.raises(EndpointError, match="no Grad-CAM"):
        write_gradcam_png({"predictions": [{"label": "a"}]}, tmp_path / "x.png")
