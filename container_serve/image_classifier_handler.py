"""The image classifier as a TorchServe-style handler: initialize -> preprocess -> inference -> postprocess.

One instance serves one model inside one MMS worker process. MMS may hand :meth:`handle` several
requests at once (a batch); every request is decoded on its own, so one bad request gets its own error
status (any exception while decoding it included) while the others in the batch are answered normally,
and all good images of the batch go through the network in one forward pass.

Loading: the model directory is checked again (:func:`container_serve.model_layout.check_model_dir`),
then the memory the weights will need is compared with what the cgroup and the host have free
(:mod:`container_serve.memory`), and only then are the weights read (``weights_only=True``) and put in
their served form (:mod:`container_serve.model_form`). A torch allocation failure is re-raised as
``MemoryError``, so MMS answers 507 as SageMaker expects.

Threads: each forward pass runs with as many torch threads as there are cores no other worker is using
(:mod:`container_serve.core_slots`).

Grad-CAM costs a backward pass per image, so ``explain=gradcam`` explains the first image of a request
only (:data:`container_serve.content_types.GRADCAM_IMAGES_PER_REQUEST`).
"""

from __future__ import annotations

import logging
import re
import traceback
from dataclasses import dataclass, field

import torch

from byoc_common.architectures import last_conv_layer
from byoc_common.artifact import WEIGHTS_FILE, network_bytes, read_model_metadata
from container_serve import content_types as ct
from container_serve import memory, responses
from container_serve.core_slots import CoreSlots
from container_serve.decoding import DecodeLimits, ImageDecoder
from container_serve.errors import InferenceError, InternalServerError, PayloadTooLargeError
from container_serve.gradcam import GradCam, heatmap_png_base64, overlay_png_base64
from container_serve.model_form import load_served_model
from container_serve.model_layout import check_model_dir
from container_serve.settings import ServeSettings

logger = logging.getLogger(__name__)

# torch's CPU allocator raises RuntimeError ("DefaultCPUAllocator: not enough memory" / "can't allocate
# memory"); CUDA raises torch.OutOfMemoryError, a RuntimeError too.
TORCH_OOM = re.compile(r"DefaultCPUAllocator|not enough memory|can't allocate memory|out of memory", re.I)


def as_memory_error(error: BaseException) -> MemoryError | None:
    """The out-of-memory condition behind ``error`` (itself, or what it wraps), as a ``MemoryError``."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, MemoryError):
            return error
        if isinstance(error, torch.OutOfMemoryError) or (isinstance(error, RuntimeError)
                                                         and TORCH_OOM.search(str(error))):
            return MemoryError(f"out of memory: {str(error)[:300]}")
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


@dataclass
class ParsedRequest:
    """One request of a batch after preprocessing: its images or the error that refused it."""

    images: list[torch.Tensor] = field(default_factory=list)
    accept: str = ct.JSON
    options: ct.InferenceOptions = field(default_factory=ct.InferenceOptions)
    error: InferenceError | None = None


class _Headers:
    """Case-insensitive view of one request's headers as MMS passes them."""

    def __init__(self, context, idx: int):
        raw = context.get_all_request_header(idx) if context is not None else {}
        self._h = {str(k).lower(): v for k, v in (raw or {}).items() if isinstance(v, str)}

    def get(self, name: str) -> str | None:
        return self._h.get(name.lower())


class ImageClassifierHandler:
    def __init__(self, settings: ServeSettings | None = None):
        self.settings = settings or ServeSettings.from_env()
        self.model = None
        self.classes: list[str] = []
        self.config = None
        self.decoder: ImageDecoder | None = None
        self.gradcam: GradCam | None = None
        self.model_name = ""
        self.cores: CoreSlots | None = None

    # -- initialize -----------------------------------------------------------------------------
    def initialize(self, context) -> None:
        props = context.system_properties
        # log_ignored=False: the serve entry point or the gate already logged the inert extras.
        model_dir = check_model_dir(props["model_dir"], self.settings.model_root, log_ignored=False)
        self.model_name = getattr(context, "model_name", "") or model_dir.name
        torch.set_num_threads(self.settings.torch_threads)
        self.cores = CoreSlots(self.settings.core_slots_dir, self.settings.torch_threads,
                               self.settings.max_torch_threads)
        config, _ = read_model_metadata(model_dir)  # bounded figures (ModelArtifactError: 400)
        weights = max((model_dir / WEIGHTS_FILE).stat().st_size, network_bytes(config))
        needed = memory.load_needs(weights, config.image_size)
        memory.check_room(needed, f"model {self.model_name}", self.settings.cgroup_dir)
        try:
            self._load(model_dir)
        except Exception as e:
            oom = as_memory_error(e)
            if oom is not None:
                raise oom from e
            raise

    def _load(self, model_dir) -> None:
        # load_served_model rebuilds the network from model_config.json, reads model.pth with
        # torch.load(weights_only=True) (no pickled code from the artifact ever runs here), puts it in
        # its served form and warms it up.
        self.model, self.classes, self.config = load_served_model(model_dir, self.settings.model_form)
        self.decoder = ImageDecoder(self.config, DecodeLimits(self.settings.max_image_pixels,
                                                              self.settings.max_images_per_request))
        self.gradcam = GradCam(self.model, self.config.arch, last_conv_layer(self.model.net, self.config.arch))
        logger.info("model %s loaded from %s: %s, %d classes, input %dpx, %s form, %d-%d torch threads%s",
                    self.model_name, model_dir, self.config.arch, len(self.classes), self.config.image_size,
                    self.model.form, self.settings.torch_threads, self.settings.max_torch_threads,
                    " (adaptive)" if self.cores.adaptive else "")

    # -- the four steps ---------------------------------------------------------------------------
    def preprocess(self, data: list[dict], context) -> list[ParsedRequest]:
        parsed = []
        for idx, request in enumerate(data):
            headers = _Headers(context, idx)
            req = ParsedRequest()
            try:
                req.options = ct.parse_custom_attributes(headers.get(ct.CUSTOM_ATTRIBUTES_HEADER))
                req.accept = ct.negotiate_accept(headers.get("accept"), self.settings.default_accept)
                responses.check_producible(req.accept, req.options)
                body = request.get("body")
                if body is None:
                    body = request.get("data")
                req.images = self.decoder.decode(body, headers.get("content-type") or "")
            except InferenceError as e:
                req.error = e
            except MemoryError:
                # A body within every limit that still does not fit: too large for this worker, not a 507
                # (which would tell SageMaker to evict models over one request).
                req.error = PayloadTooLargeError("decoding this request needs more memory than the worker has")
            except Exception as e:  # noqa: BLE001 - a bug on one request must not fail the batch
                logger.error("model %s: decoding request %d failed:\n%s", self.model_name, idx,
                             traceback.format_exc())
                req.error = InternalServerError(f"internal error while decoding: {type(e).__name__}")
            parsed.append(req)
        return parsed

    def inference(self, images: torch.Tensor) -> torch.Tensor:
        """NCHW batch -> N x num_classes probabilities."""
        with self.cores.threads(), torch.inference_mode():
            return torch.softmax(self.model(images), dim=1)

    def postprocess(self, parsed: list[ParsedRequest], probabilities: torch.Tensor, context) -> list[bytes]:
        bodies, offset = [], 0
        for idx, req in enumerate(parsed):
            if req.error is not None:
                bodies.append(req.error.to_json_bytes())
                _set_status(context, idx, req.error.status, req.error.phrase, ct.JSON)
                continue
            preds = []
            for n, image in enumerate(req.images):
                pred = responses.ImagePrediction(probabilities[offset])
                offset += 1
                if req.options.explain == "gradcam" and n < ct.GRADCAM_IMAGES_PER_REQUEST:
                    pred.gradcam_index = int(pred.probabilities.argmax())
                    with self.cores.threads():
                        heat = self.gradcam.heatmap(image, pred.gradcam_index)
                    pred.gradcam_png_base64 = overlay_png_base64(image, heat, self.config)
                    pred.gradcam_heatmap_base64 = heatmap_png_base64(heat)
                preds.append(pred)
            bodies.append(responses.encode(preds, self.classes, req.options, req.accept))
            _set_status(context, idx, 200, "OK", req.accept)
        return bodies

    def handle(self, data: list[dict], context) -> list[bytes]:
        if len(data) > 1:
            logger.info("model %s: handling a batch of %d requests", self.model_name, len(data))
        parsed = self.preprocess(data, context)
        images = [img for req in parsed if req.error is None for img in req.images]
        if images:
            probabilities = _refuse_non_finite(parsed, self.inference(torch.stack(images)), self.model_name)
        else:
            probabilities = torch.empty(0, len(self.classes))
        return self.postprocess(parsed, probabilities, context)


def _refuse_non_finite(parsed: list[ParsedRequest], probabilities: torch.Tensor, model_name: str) -> torch.Tensor:
    """Never answer NaN (not JSON, and no probability): a request whose images came out non-finite gets a
    JSON 500, because the request was fine and the model is not (weights that overflow). Returns the rows
    of the requests still to answer, in order."""
    finite = torch.isfinite(probabilities).all(dim=1)
    if bool(finite.all()):
        return probabilities
    keep, offset = [], 0
    for req in (r for r in parsed if r.error is None):
        rows = range(offset, offset + len(req.images))
        offset = rows.stop
        if bool(finite[rows.start:rows.stop].all()):
            keep.extend(rows)
        else:
            logger.error("model %s produced non-finite probabilities (NaN or infinity)", model_name)
            req.error = InternalServerError("the model produced non-finite probabilities (NaN or infinity) for "
                                            "this input: the model is broken, not the request")
            req.images = []
    return probabilities[keep]


def _set_status(context, idx: int, code: int, phrase: str, content_type: str) -> None:
    if context is None:
        return
    context.set_response_status(code=code, phrase=phrase, idx=idx)
    context.set_response_content_type(idx, content_type)
