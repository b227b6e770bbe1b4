"""The endpoint client's batch-transform file semantics (one <input>.out per input, as a transform
job writes them) and its Grad-CAM answer decoding."""

from __future__ import annotations

import json

import pytest

from byoc.errors import EndpointError
from byoc.gradcam import write_gradcam_png
from byoc.local.client import transform_folder


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


def _png(img) -> str:
    import base64
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_gradcam_figure_shows_image_heat_map_and_overlay_with_the_answer(tmp_path):
    import numpy as np
    from PIL import Image

    photo = tmp_path / "shirt.jpg"
    Image.fromarray(np.full((28, 28, 3), 200, np.uint8)).save(photo)      # a Fashion-MNIST-sized image
    heat = np.zeros((64, 64), np.uint8)
    heat[16:48, 16:48] = 255
    answer = {"predictions": [{"label": "Shirt", "probability": 0.93,
                               "gradcam": {"label": "Shirt", "data": _png(Image.new("RGB", (64, 64))),
                                           "heatmap": _png(Image.fromarray(heat, mode="L"))}}]}
    out = tmp_path / "cam.png"
    prediction = write_gradcam_png(answer, out, photo)
    figure = Image.open(out)
    assert figure.format == "PNG" and figure.width >= 1200 and figure.height >= 400   # readable, not 64 px
    assert prediction["label"] == "Shirt" and "gradcam" not in prediction
    # Three panels side by side: the middle one (the heat map) is hot in its centre, cold at its edge.
    pixels = np.asarray(figure.convert("RGB")).astype(int)
    middle = pixels[:, figure.width // 3: 2 * figure.width // 3]
    row = middle[middle.shape[0] // 2]
    centre = row[len(row) // 2 - 40]                     # left of the colour bar: inside the map
    assert centre[0] > 200 and centre[1] > 200          # inferno: pale yellow where the map is 1
    edge = middle[middle.shape[0] // 2 - 120, len(row) // 2 - 40]
    assert edge.max() < 40                              # and black where it is 0: low means low

    plain = tmp_path / "overlay.png"
    write_gradcam_png(answer, plain)                    # no image given: the server's overlay as it is
    assert Image.open(plain).size == (64, 64)


def test_gradcam_figure_names_the_maps_resolution_and_marks_a_wrong_answer(tmp_path):
    from byoc.gradcam.figure import map_resolution, title_of, true_class_of

    assert map_resolution((96, 96)) == "3x3 map for a 96x96 input"        # EfficientNet-Lite0 at the demo's size
    assert map_resolution((224, 224)) == "7x7 map for a 224x224 input"
    assert map_resolution((96, 96), (6, 6)) == "6x6 map for a 96x96 input"  # the server's own figure wins
    assert true_class_of(tmp_path / "data" / "test" / "001.T-shirt_top" / "0000.jpg") == "T-shirt_top"   # classes.json's name
    assert true_class_of(tmp_path / "validation" / "a" / "x.png") == "a"
    assert true_class_of(tmp_path / "shirt.jpg") is None                   # no class folder: no verdict
    text, colour = title_of("Shirt", 0.2, "T-shirt_top")
    assert text == "predicted: Shirt (20%), WRONG: the image is a T-shirt_top" and colour is not None
    assert title_of("Trouser", 0.97, "Trouser")[0] == "predicted: Trouser (97%), right"
    assert title_of("x", None, None) == ("predicted: x", None)
