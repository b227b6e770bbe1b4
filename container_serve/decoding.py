"""Request body -> model-ready tensors, for every accepted content type (see content_types).

Every image goes through :func:`byoc_common.preprocessing.eval_transform`, the transform the trainer
evaluates with, so the endpoint sees exactly what validation saw. Anything that is not a well-formed
image raises a :class:`~container_serve.errors.InferenceError` with a message a client can act on.
The number of images is known, and checked against the limit, before the first one is decoded
(:mod:`container_serve.body_limits`).

Each image is also checked before it is decoded or transformed, so a small body cannot make the worker
burn seconds or gigabytes while staying under every size limit:

* pixels: width x height from the header, against ``BYOC_MAX_IMAGE_PIXELS`` (413);
* shape: the long side at most :data:`MAX_ASPECT_RATIO` times the short one (413). The transform resizes
  the short side to ``resize_size``, so a 7600x1 PNG (89 bytes) would become 1,945,600 x 256 pixels
  (1.5 GB) before the centre crop keeps 256 x 256 of them;
* JPEG scans (:mod:`container_serve.jpeg_scans`): decode time grows with scans x pixels, so a JPEG may
  have as many scans as keep scans x pixels within :data:`JPEG_SCANS_AT_PIXEL_LIMIT` times the pixel
  limit, and never more than :data:`MAX_JPEG_SCANS` (413). A 36-megapixel progressive JPEG with one
  scan repeated 600 times (350 kB) took 34 s here to decode; the same image's own 10 scans 0.6 s.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from byoc_common.artifact import ModelConfig
from byoc_common.preprocessing import eval_transform, to_rgb
from container_serve import content_types as ct
from container_serve import jpeg_scans
from container_serve.body_limits import load_json, nested_list_shape, npy_array, read_npy_header
from container_serve.errors import BadRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from container_serve.settings import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_IMAGES_PER_REQUEST

# Pillow parses only ct.IMAGE_FORMATS here; anything else (TIFF, EPS, PSD, ...) is refused before decoding.
MAX_ASPECT_RATIO = 20          # panoramas are 2:1 to ~10:1; past 20:1 the centre crop shows 1/20 of it
JPEG_SCANS_AT_PIXEL_LIMIT = 16  # an image at the pixel limit may have 16 scans, a smaller one more...
MAX_JPEG_SCANS = 100           # ...up to this (libjpeg writes 10 for colour; DALI refuses past 500)


@dataclass(frozen=True)
class DecodeLimits:
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_images: int = DEFAULT_MAX_IMAGES_PER_REQUEST


class ImageDecoder:
    """Decodes request bodies for one model (its input size and normalisation)."""

    def __init__(self, config: ModelConfig, limits: DecodeLimits = DecodeLimits()):
        self.transform = eval_transform(config)
        self.resize_size = config.resize_size
        self.limits = limits

    def decode(self, body: bytes | bytearray | None, content_type: str) -> list[torch.Tensor]:
        """Model inputs (float CHW tensors) for one request, in request order."""
        kind = ct.media_type(content_type)
        if kind not in ct.ACCEPTED_CONTENT_TYPES:
            raise UnsupportedMediaTypeError(
                f"unsupported content type {content_type!r}; accepted: "
                f"{', '.join(t for t in ct.ACCEPTED_CONTENT_TYPES if t)} or none (image bytes)"
            )
        if not body:
            raise BadRequestError("empty request body")
        body = bytes(body)
        if kind in ct.IMAGE_TYPES:
            return [self._from_encoded_image(body)]
        if kind == ct.NPY:
            return self._from_npy(body)
        return self._from_json(body)

    def _check_count(self, count: int, what: str) -> None:
        if count < 1:
            raise BadRequestError(f"{what} holds no image")
        if count > self.limits.max_images:
            raise PayloadTooLargeError(f"{count} images in one request; the limit is {self.limits.max_images}")

    # -- encoded images ------------------------------------------------------------------------
    def _from_encoded_image(self, data: bytes, what: str = "the request body") -> torch.Tensor:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data), formats=ct.IMAGE_FORMATS)
                self._check_pixels(img.width, img.height, what)
                if jpeg_scans.is_jpeg(data):
                    self._check_scans(data, img.width * img.height, what)
                img.load()
        except Image.DecompressionBombError as e:  # Pillow's own guard, in case a format lies early
            raise PayloadTooLargeError(f"{what}: refused as a decompression bomb ({e})") from e
        except Image.DecompressionBombWarning as e:
            raise PayloadTooLargeError(f"{what}: refused as a decompression bomb ({e})") from e
        except UnidentifiedImageError as e:
            raise BadRequestError(
                f"{what} is not a decodable image (supported formats: {', '.join(ct.IMAGE_FORMATS)})"
            ) from e
        except (OSError, SyntaxError, ValueError) as e:  # truncated / corrupt data
            raise BadRequestError(f"{what} could not be decoded as an image: {e}") from e
        return self.transform(to_rgb(img))

    def _check_pixels(self, width: int, height: int, what: str) -> None:
        if width < 1 or height < 1:
            raise BadRequestError(f"{what}: image has no pixels ({width}x{height})")
        if width * height > self.limits.max_image_pixels:
            raise PayloadTooLargeError(
                f"{what}: {width}x{height} = {width * height} pixels is over the limit of "
                f"{self.limits.max_image_pixels} (decompression bomb protection)"
            )
        short, long = sorted((width, height))
        if long > MAX_ASPECT_RATIO * short:
            resize = self.resize_size
            raise PayloadTooLargeError(
                f"{what}: {width}x{height} is more than {MAX_ASPECT_RATIO} times as long as it is wide; "
                f"resizing its short side to {resize} px would make {resize * (resize * long // short)} pixels"
            )

    def _check_scans(self, data: bytes, pixels: int, what: str) -> None:
        allowed = min(MAX_JPEG_SCANS, JPEG_SCANS_AT_PIXEL_LIMIT * self.limits.max_image_pixels // pixels)
        scans = jpeg_scans.count_scans(data, stop_after=allowed)
        if scans > allowed:
            raise PayloadTooLargeError(
                f"{what}: a JPEG with more than {allowed} scans at {pixels} pixels (decoding time grows with "
                f"scans x pixels; at most {JPEG_SCANS_AT_PIXEL_LIMIT} scans at the pixel limit, {MAX_JPEG_SCANS} "
                "for any size)"
            )

    # -- arrays -----------------------------------------------------------------------------------
    def _from_npy(self, body: bytes) -> list[torch.Tensor]:
        header = read_npy_header(body)
        self._check_count(_images_in_shape(header.shape), "the npy array")
        return self._from_array(npy_array(body, header), "the npy array")

    def _from_array(self, arr: np.ndarray, what: str) -> list[torch.Tensor]:
        if arr.dtype == np.uint8 or np.issubdtype(arr.dtype, np.integer):
            return self._from_pixels_hwc(arr, what)
        if arr.dtype in (np.float32, np.float64, np.float16):
            return self._from_floats_chw(arr, what)
        raise BadRequestError(
            f"{what} has dtype {arr.dtype}; expected uint8 (HWC/NHWC, 0..255) or float32/float64 "
            "(CHW/NCHW, 0..1)"
        )

    def _from_pixels_hwc(self, arr: np.ndarray, what: str) -> list[torch.Tensor]:
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
            raise BadRequestError(
                f"{what} has shape {tuple(arr.shape)}; integer pixels must be HWC or NHWC with 1 or 3 channels"
            )
        if arr.dtype != np.uint8:
            if arr.size and (arr.min() < 0 or arr.max() > 255):
                raise BadRequestError(f"{what}: integer pixel values must lie in 0..255")
            arr = arr.astype(np.uint8)
        out = []
        for image in arr:
            self._check_pixels(image.shape[1], image.shape[0], what)
            chw = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a copy: the body's view is read-only
            out.append(self.transform(chw.expand(3, -1, -1).contiguous()))
        return out

    def _from_floats_chw(self, arr: np.ndarray, what: str) -> list[torch.Tensor]:
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1] not in (1, 3):
            raise BadRequestError(
                f"{what} has shape {tuple(arr.shape)}; float pixels must be CHW or NCHW with 1 or 3 channels"
            )
        if not np.isfinite(arr).all() or (arr.size and (arr.min() < 0.0 or arr.max() > 1.0)):
            raise BadRequestError(f"{what}: float pixel values must be finite and lie in [0, 1]")
        out = []
        for image in arr.astype(np.float32, copy=False):
            self._check_pixels(image.shape[2], image.shape[1], what)
            chw = torch.from_numpy(np.array(image))
            out.append(self.transform(chw.expand(3, -1, -1).contiguous()))
        return out

    # -- JSON -------------------------------------------------------------------------------------
    def _from_json(self, body: bytes) -> list[torch.Tensor]:
        doc = load_json(body)
        if isinstance(doc, dict):
            if "instances" not in doc:
                raise BadRequestError('a JSON object body must have an "instances" list')
            items = doc["instances"]
            if not isinstance(items, list) or not items:
                raise BadRequestError('"instances" must be a non-empty list')
            named = [(item, f"instances[{i}]") for i, item in enumerate(items)]
        elif isinstance(doc, list) and doc and all(isinstance(x, str) for x in doc):
            named = [(item, f"item {i}") for i, item in enumerate(doc)]
        else:
            named = [(doc, "the JSON body")]
        self._check_count(sum(_images_in_item(item) for item, _ in named), "the JSON body")
        return [image for item, what in named for image in self._json_image(item, what)]

    def _json_image(self, item, what: str) -> list[torch.Tensor]:
        if isinstance(item, str):
            return [self._from_base64(item, what)]
        if isinstance(item, list):
            return self._from_array(_nested_list_to_array(item, what), what)
        raise BadRequestError(f"{what}: expected a base64 image string or nested lists of numbers")

    def _from_base64(self, text: str, what: str) -> torch.Tensor:
        if text.startswith("data:") and "," in text:  # data URI: data:image/png;base64,....
            text = text.split(",", 1)[1]
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise BadRequestError(f"{what} is not valid base64: {e}") from e
        if not data:
            raise BadRequestError(f"{what} is an empty image")
        return self._from_encoded_image(data, what)


def _images_in_shape(shape: tuple[int, ...]) -> int:
    """Images an array of this shape holds: N for NHWC / NCHW, else one."""
    return shape[0] if len(shape) == 4 else 1


def _images_in_item(item) -> int:
    return _images_in_shape(nested_list_shape(item)) if isinstance(item, list) else 1


def _nested_list_to_array(item: list, what: str) -> np.ndarray:
    try:
        arr = np.asarray(item)
    except ValueError as e:  # ragged lists
        raise BadRequestError(f"{what}: nested lists must form a rectangular array ({e})") from e
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise BadRequestError(f"{what}: nested lists must hold only numbers")
    return arr
