"""The endpoint client's batch-transform file semantics (one <input>.out per input, as a transform
job writes them) and its Grad-CAM answer decoding."""

from __future__ import annotations

import json

import pytest

from byoc.local.client import EndpointError, transform_folder, write_gradcam_png


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
