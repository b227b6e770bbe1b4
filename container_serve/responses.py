"""Class probabilities -> response bodies. The response schemas live here.

``application/json`` (one entry per input image, in request order)::

    {"predictions": [
        {"label": "Class_a", "index": 0, "probability": 0.91,     # the top class
         "top_k": [{"label": "Class_a", "index": 0, "probability": 0.91},
                   {"label": "Class_b", "index": 1, "probability": 0.05}, ...],   # topk entries, best first
         "probabilities": [0.91, 0.05, ...],      # only with probabilities=all, in class-index order
         "gradcam": {"label": "Class_a", "index": 0, "content_type": "image/png",
                     "encoding": "base64", "data": "iVBORw0...",    # overlay on the model's input
                     "heatmap": "iVBORw0..."}}   # raw heat map, greyscale PNG; only with explain=gradcam
     ],
     "classes": ["Class_a", "Class_b", ...]}      # only with probabilities=all

``text/csv`` with a header line. Normally one row per (image, rank)::

    image,rank,label,index,probability
    0,1,Class_a,0,0.910000

With ``probabilities=all``, one row per image and one column per class::

    image,Class_a,Class_b,...
    0,0.910000,0.050000,...

``application/x-npy``: one ``numpy.save`` array (``allow_pickle=False``), ``float32``, shape
``[images, classes]``, row ``n`` the full probability vector of image ``n`` in class-index order, whatever
``topk`` and ``probabilities`` say (the class names are not in it: ``GET /models`` or ``classes.json``).

Grad-CAM heatmaps are JSON-only (a CSV or npy request with ``explain=gradcam`` is refused with 406).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

import numpy as np
import torch

from container_serve import content_types as ct
from container_serve.content_types import InferenceOptions
from container_serve.errors import NotAcceptableError


@dataclass
class ImagePrediction:
    probabilities: torch.Tensor  # 1-D, one entry per class
    gradcam_png_base64: str | None = None
    gradcam_index: int | None = None
    gradcam_heatmap_base64: str | None = None


def top_k(probabilities: torch.Tensor, classes: list[str], k: int) -> list[dict]:
    k = min(k, len(classes))
    values, indices = torch.topk(probabilities, k)
    return [
        {"label": classes[i], "index": int(i), "probability": float(p)}
        for p, i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def check_producible(accept: str, options: InferenceOptions) -> None:
    if accept != ct.JSON and options.explain:
        raise NotAcceptableError(f"Grad-CAM explanations are only returned as {ct.JSON}, not {accept}")


def encode(predictions: list[ImagePrediction], classes: list[str], options: InferenceOptions,
           accept: str) -> bytes:
    if accept == ct.CSV:
        return _csv(predictions, classes, options).encode("utf-8")
    if accept == ct.NPY:
        return _npy(predictions, len(classes))
    return json.dumps(_json(predictions, classes, options)).encode("utf-8")


def _json(predictions: list[ImagePrediction], classes: list[str], options: InferenceOptions) -> dict:
    out = []
    for pred in predictions:
        best = top_k(pred.probabilities, classes, options.topk)
        entry = dict(best[0])
        entry["top_k"] = best
        if options.all_probabilities:
            entry["probabilities"] = [float(p) for p in pred.probabilities.tolist()]
        if pred.gradcam_png_base64 is not None:
            entry["gradcam"] = {
                "label": classes[pred.gradcam_index],
                "index": pred.gradcam_index,
                "content_type": ct.PNG,
                "encoding": "base64",
                "data": pred.gradcam_png_base64,
                "heatmap": pred.gradcam_heatmap_base64,
            }
        out.append(entry)
    doc: dict = {"predictions": out}
    if options.all_probabilities:
        doc["classes"] = list(classes)
    return doc


def _csv(predictions: list[ImagePrediction], classes: list[str], options: InferenceOptions) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if options.all_probabilities:
        writer.writerow(["image", *classes])
        for n, pred in enumerate(predictions):
            writer.writerow([n, *(f"{p:.6f}" for p in pred.probabilities.tolist())])
    else:
        writer.writerow(["image", "rank", "label", "index", "probability"])
        for n, pred in enumerate(predictions):
            for rank, item in enumerate(top_k(pred.probabilities, classes, options.topk), start=1):
                writer.writerow([n, rank, item["label"], item["index"], f"{item['probability']:.6f}"])
    return buf.getvalue()


def _npy(predictions: list[ImagePrediction], num_classes: int) -> bytes:
    rows = [pred.probabilities.detach().float().cpu().numpy() for pred in predictions]
    array = np.stack(rows).astype(np.float32) if rows else np.empty((0, num_classes), np.float32)
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
