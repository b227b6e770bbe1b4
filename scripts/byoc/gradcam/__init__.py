"""The Grad-CAM PNG an operator gets from an endpoint's answer, whichever backend asked: the local
endpoint's client (:mod:`byoc.local.client`) and the SageMaker backend's ``InvokeEndpoint`` both hand the
JSON answer here. The figure itself is :mod:`byoc.gradcam.figure` (matplotlib, imported only when drawn).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from byoc.errors import EndpointError


def write_gradcam_png(answer: dict, out: str | os.PathLike, image: str | os.PathLike | None = None) -> dict:
    """Write the ``gradcam`` entry of a JSON answer as a PNG: with the ``image`` that was sent, the
    three-panel figure (:mod:`byoc.gradcam.figure`); without it, the server's overlay."""
    try:
        prediction = answer["predictions"][0]
        cam = prediction["gradcam"]
    except (KeyError, IndexError, TypeError) as e:
        raise EndpointError(f"the answer holds no Grad-CAM heatmap ({e}): {json.dumps(answer)[:300]}") from e
    png = base64.b64decode(cam["data"])
    heatmap = base64.b64decode(cam["heatmap"]) if cam.get("heatmap") else b""
    if not png.startswith(b"\x89PNG") or (heatmap and not heatmap.startswith(b"\x89PNG")):
        raise EndpointError("the Grad-CAM data is not a PNG image")
    out = Path(out)
    if image is not None and heatmap:
        from byoc.gradcam.figure import draw_figure

        map_size = cam.get("map_size")    # the feature map's rows and columns, when the server says
        draw_figure(image, heatmap, cam.get("label", prediction.get("label")), prediction.get("probability"), out,
                    map_size=tuple(map_size) if map_size else None)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(png)
    return {k: v for k, v in prediction.items() if k != "gradcam"} | {"gradcam_label": cam.get("label")}
