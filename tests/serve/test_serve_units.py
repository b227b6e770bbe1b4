"""Fast tests of the serving pieces without the Java frontend: content types, decoding, archives, settings,
and the handler driven through MMS's own python ``Service`` (what a worker runs)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import struct
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from byoc_common.architectures import build_classifier
from byoc_common.artifact import ARTIFACT_FILES, ModelArtifactError, ModelConfig, save_model_artifact
from container_serve import content_types as ct
from container_serve.decoding import DecodeLimits, ImageDecoder
from container_serve.errors import (
    BadRequestError,
    NotAcceptableError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from container_serve.model_archive import (
    UnsafeArchiveError,
    create_model_archive,
    deploy_model,
    extract_model_archive,
)
from container_serve.settings import ServeSettings, SettingsError, cpu_count

CONFIG = ModelConfig("resnet18", 3, image_size=32, resize_size=36)


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


RED = Image.new("RGB", (40, 30), (220, 20, 20))


# ---- content types -------------------------------------------------------------------------------

def test_custom_attributes_parse():
    opts = ct.parse_custom_attributes("explain=gradcam, topk=3; probabilities=all, trace=abc")
    assert opts == ct.InferenceOptions(topk=3, all_probabilities=True, explain="gradcam")
    assert ct.parse_custom_attributes(None) == ct.InferenceOptions()
    assert ct.parse_custom_attributes(ct.format_custom_attributes(2, True, "gradcam")) == \
        ct.InferenceOptions(2, True, "gradcam")
    for bad in ("topk=0", "topk=x", "explain=lime", "probabilities=some"):
        with pytest.raises(BadRequestError):
            ct.parse_custom_attributes(bad)


def test_accept_negotiation():
    assert ct.negotiate_accept(None) == ct.JSON
    assert ct.negotiate_accept("*/*", default=ct.CSV) == ct.CSV
    assert ct.negotiate_accept("text/csv; charset=utf-8") == ct.CSV
    assert ct.negotiate_accept("image/png, application/json;q=0.5") == ct.JSON
    assert ct.negotiate_accept("application/x-npy") == ct.NPY    # PyTorchPredictor's NumpyDeserializer
    with pytest.raises(NotAcceptableError):
        ct.negotiate_accept("image/png")


# ---- decoding ------------------------------------------------------------------------------------

@pytest.fixture
def decoder():
    return ImageDecoder(CONFIG, DecodeLimits(max_image_pixels=1_000_000, max_images=4))


@pytest.mark.parametrize("fmt,kind", [("JPEG", ct.JPEG), ("PNG", ct.PNG), ("BMP", ct.X_IMAGE), ("WEBP", ct.X_IMAGE)])
def test_encoded_images_decode_to_model_input(decoder, fmt, kind):
    (x,) = decoder.decode(_encoded(RED, fmt), kind + "; charset=binary")
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32


def test_rgba_and_grey_images_become_rgb(decoder):
    for img in (Image.new("RGBA", (20, 20), (0, 0, 255, 128)), Image.new("L", (20, 20), 7)):
        (x,) = decoder.decode(_encoded(img, "PNG"), ct.PNG)
        assert x.shape == (3, 32, 32)


def test_arrays(decoder):
    hwc = np.asarray(RED)
    (a,) = decoder.decode(_npy(hwc), ct.NPY)
    (b,) = decoder.decode(_encoded(RED, "PNG"), ct.PNG)  # lossless: identical pixels
    assert torch.allclose(a, b)
    assert len(decoder.decode(_npy(np.stack([hwc, hwc])), ct.NPY)) == 2                 # NHWC
    assert len(decoder.decode(_npy(np.zeros((2, 3, 20, 20), np.float32)), ct.NPY)) == 2  # NCHW
    assert decoder.decode(_npy(np.zeros((20, 20, 1), np.uint8)), ct.NPY)[0].shape == (3, 32, 32)  # grey
    for bad in (np.zeros((20, 20), np.uint8), np.zeros((3, 20, 20), np.uint8), np.zeros((20, 20, 3), np.float32),
                np.zeros((3, 8, 8), bool), np.full((3, 8, 8), np.nan, np.float32), np.zeros((1, 1, 1, 1, 3))):
        with pytest.raises(BadRequestError):
            decoder.decode(_npy(bad), ct.NPY)


def test_npy_never_unpickles(decoder):
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickled!",))

    with pytest.raises(BadRequestError, match="pickle"):
        decoder.decode(_npy(np.array([Boom()], dtype=object)), ct.NPY)


def test_json_forms(decoder):
    b64 = base64.b64encode(_encoded(RED, "PNG")).decode()
    assert len(decoder.decode(json.dumps(b64).encode(), ct.JSON)) == 1
    assert len(decoder.decode(json.dumps([b64, b64]).encode(), ct.JSON)) == 2
    assert len(decoder.decode(json.dumps({"instances": [b64, np.asarray(RED).tolist()]}).encode(), ct.JSON)) == 2
    assert len(decoder.decode(json.dumps("data:image/png;base64," + b64).encode(), ct.JSON)) == 1
    assert len(decoder.decode(json.dumps(np.zeros((3, 8, 8)).tolist()).encode(), ct.JSON)) == 1
    for bad in (b"{", b"{}", b'{"instances": []}', b"42", b'[[1, 2], [3]]', b'"%%%"', b'[["a"]]',
                json.dumps(np.full((8, 8, 3), 300).tolist()).encode()):
        with pytest.raises(BadRequestError):
            decoder.decode(bad, ct.JSON)


def test_limits(decoder):
    with pytest.raises(PayloadTooLargeError, match="decompression bomb"):
        decoder.decode(_encoded(Image.new("L", (2000, 1000)), "PNG"), ct.PNG)
    with pytest.raises(PayloadTooLargeError, match="images in one request"):
        decoder.decode(_npy(np.zeros((5, 8, 8, 3), np.uint8)), ct.NPY)


def test_broken_inputs(decoder):
    jpeg = _encoded(RED, "JPEG")
    with pytest.raises(BadRequestError):
        decoder.decode(jpeg[: len(jpeg) // 2], ct.JPEG)
    with pytest.raises(BadRequestError):
        decoder.decode(b"%!PS-Adobe-3.0 EPSF-3.0\n", ct.X_IMAGE)  # not an allowed format
    with pytest.raises(BadRequestError, match="empty"):
        decoder.decode(b"", ct.JPEG)
    with pytest.raises(UnsupportedMediaTypeError):
        decoder.decode(jpeg, "multipart/form-data; boundary=x")


def test_octet_stream_and_no_content_type_are_image_bytes(decoder):
    """What the SageMaker Python SDK's default Predictor sends (IdentitySerializer: application/octet-stream)."""
    for fmt in ("JPEG", "PNG"):
        expected = decoder.decode(_encoded(RED, fmt), ct.X_IMAGE)[0]
        for content_type in (ct.OCTET_STREAM, "", None):
            assert torch.equal(decoder.decode(_encoded(RED, fmt), content_type)[0], expected)
    with pytest.raises(BadRequestError):
        decoder.decode(b"not an image", ct.OCTET_STREAM)


# ---- settings ------------------------------------------------------------------------------------

def test_settings_from_env(tmp_path):
    s = ServeSettings.from_env({})
    assert (s.port, s.multi_model, str(s.model_root), s.max_payload_mb) == (8080, False, "/opt/ml/model", 6)
    s = ServeSettings.from_env({"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_BASE_DIR": str(tmp_path),
                                "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20", "SAGEMAKER_BATCH": "true",
                                "SAGEMAKER_MODEL_SERVER_WORKERS": "2"})
    assert s.model_root == tmp_path / "models" and s.batch and s.response_timeout_s == 600
    assert s.execution_parameters() == {"MaxConcurrentTransforms": 2, "BatchStrategy": "SINGLE_RECORD",
                                        "MaxPayloadInMB": 20}
    assert ServeSettings.from_env({"BYOC_MODEL_ROOT": str(tmp_path)}).model_root == tmp_path
    # Concurrency from processes, one torch thread each (bench/RESULTS.md section 3).
    single = ServeSettings.from_env({})
    assert (single.workers_per_model, single.torch_threads) == (cpu_count(), 1)
    assert ServeSettings.from_env({"SAGEMAKER_MULTI_MODEL": "true"}).workers_per_model == 1
    assert ServeSettings.from_env({"BYOC_TORCH_THREADS": "3"}).torch_threads == 3
    assert ServeSettings.from_env({"SAGEMAKER_BIND_TO_PORT": "40000"}).port == 40000  # the gate's port, not MMS's
    s = ServeSettings.from_env({"BYOC_BATCH_SIZE": "4", "BYOC_MAX_BATCH_DELAY_MS": "250", "BYOC_CGROUP_DIR": "/cg",
                                "BYOC_LOAD_REPORTS_DIR": str(tmp_path)})
    assert (s.batch_size, s.max_batch_delay_ms, str(s.cgroup_dir), s.load_reports_dir) == (4, 250, "/cg", tmp_path)
    for bad in ({"SAGEMAKER_BIND_TO_PORT": "70000"}, {"SAGEMAKER_MULTI_MODEL": "maybe"},
                {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0"}, {"BYOC_BATCH_STRATEGY": "ALL"}, {"BYOC_BATCH_SIZE": "0"}):
        with pytest.raises(SettingsError):
            ServeSettings.from_env(bad)


# ---- model archives ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("artifact") / "model"
    torch.manual_seed(0)
    save_model_artifact(d, build_classifier("resnet18", 3), ["a", "b", "c"], CONFIG)
    return d


def _tar_with(path, name: str, kind=tarfile.REGTYPE, linkname: str = "", data: bytes = b"x"):
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


@pytest.mark.parametrize("name,kind,linkname", [
    ("../escape.txt", tarfile.REGTYPE, ""),
    ("model/../../escape.txt", tarfile.REGTYPE, ""),
    ("/tmp/escape.txt", tarfile.REGTYPE, ""),
    ("model.pth", tarfile.SYMTYPE, "/etc/passwd"),
    ("model.pth", tarfile.LNKTYPE, "../../etc/passwd"),
    ("fifo", tarfile.FIFOTYPE, ""),
])
def test_archive_members_escaping_are_refused(tmp_path, name, kind, linkname):
    archive = _tar_with(tmp_path / "evil.tar.gz", name, kind, linkname)
    dest = tmp_path / "root" / "sub"
    with pytest.raises(UnsafeArchiveError):
        extract_model_archive(archive, dest)
    assert not (tmp_path / "root" / "escape.txt").exists() and not (tmp_path / "escape.txt").exists()
    assert not dest.exists()
    with pytest.raises(UnsafeArchiveError):
        deploy_model(archive, tmp_path / "models", "evil")
    assert list((tmp_path / "models").iterdir()) == []  # no half-deployed model left behind


def test_archive_round_trip_and_deploy(tmp_path, model_dir):
    archive = create_model_archive(model_dir, tmp_path / "model.tar.gz")
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["classes.json", "model.pth", "model_config.json"]
    target = deploy_model(archive, tmp_path / "models", "m1")
    assert target == tmp_path / "models" / "m1" and (target / "model.pth").is_file()
    with pytest.raises(FileExistsError):
        deploy_model(model_dir, tmp_path / "models", "m1")
    assert deploy_model(model_dir, tmp_path / "models", "m1", overwrite=True) == target
    with pytest.raises(ValueError):
        deploy_model(model_dir, tmp_path / "models", "../m2")
    not_a_model = _tar_with(tmp_path / "other.tar.gz", "model_config.json", data=b"{}")
    with pytest.raises(ModelArtifactError):
        deploy_model(not_a_model, tmp_path / "models", "m3")


@pytest.mark.parametrize("extra", ["MAR-INF/MANIFEST.json", "MANIFEST.json", "handler.py", "torch.py", "readme.txt",
                                   "code/inference.py"])
def test_archives_carry_and_unpack_only_the_artifact_files(tmp_path, model_dir, extra):
    """The server refuses a model directory holding anything else (container_serve.model_layout), so the
    archive code never writes or unpacks anything else."""
    dirty = tmp_path / "dirty"
    shutil.copytree(model_dir, dirty)
    (dirty / extra).parent.mkdir(parents=True, exist_ok=True)
    (dirty / extra).write_text("print('code')")
    with tarfile.open(create_model_archive(dirty, tmp_path / "model.tar.gz")) as tar:
        assert sorted(tar.getnames()) == sorted(ARTIFACT_FILES)
    assert sorted(p.name for p in deploy_model(dirty, tmp_path / "models", "copied").iterdir()) == sorted(ARTIFACT_FILES)
    hostile_tar = tmp_path / "hostile.tar.gz"
    with tarfile.open(hostile_tar, "w:gz") as tar:
        for name in ARTIFACT_FILES:
            tar.add(model_dir / name, arcname=name)
        tar.add(dirty / extra, arcname=extra)
    with pytest.raises(UnsafeArchiveError, match="not part of a model artifact"):
        deploy_model(hostile_tar, tmp_path / "models", "hostile")
    assert not (tmp_path / "models" / "hostile").exists()
    with tarfile.open(tmp_path / "dotted.tar.gz", "w:gz") as tar:  # `tar -C dir .` style names
        tar.add(model_dir, arcname=".")
    assert (deploy_model(tmp_path / "dotted.tar.gz", tmp_path / "models", "dotted") / "model.pth").is_file()


# ---- the handler inside MMS's python Service ----------------------------------------------------

@pytest.fixture
def mms_service(monkeypatch, model_dir):
    """Our handler loaded the way an MMS worker loads it (mms.model_loader), batch size 8."""
    from mms.model_loader import ModelLoaderFactory

    monkeypatch.setenv("BYOC_MODEL_ROOT", str(model_dir.parent))
    monkeypatch.setenv("BYOC_TORCH_THREADS", "1")
    loader = ModelLoaderFactory.get_model_loader(str(model_dir))
    return loader.load("m", str(model_dir), "container_serve.handler_service", None, 8)


def _request(i: int, body: bytes, content_type: str, **headers) -> dict:
    hdrs = [{"name": b"Content-Type", "value": content_type.encode()}]
    hdrs += [{"name": k.replace("_", "-").encode(), "value": v.encode()} for k, v in headers.items()]
    return {"requestId": str(i).encode(), "parameters": [{"name": "body", "contentType": content_type,
                                                          "value": body}], "headers": hdrs}


def test_batch_with_good_and_bad_requests(mms_service):
    png = _encoded(RED, "PNG")
    batch = [_request(0, png, ct.PNG), _request(1, b"junk", ct.PNG), _request(2, b"x", "text/plain"),
             _request(3, png, ct.PNG, Accept=ct.CSV), _request(4, png, ct.PNG, **{"X_Amzn_SageMaker_Custom_Attributes": "explain=gradcam"})]
    resp = mms_service.predict(batch)
    assert struct.unpack("!i", resp[:4])[0] == 200
    ctx = mms_service.context
    assert [ctx.get_response_status(i)[0] for i in range(5)] == [200, 400, 415, 200, 200]
    assert [ctx.get_response_content_type(i) for i in range(5)] == [ct.JSON, ct.JSON, ct.JSON, ct.CSV, ct.JSON]


def _bodies(service, batch: list[dict]) -> list[bytes]:
    """The response bodies of one batch, taken where MMS's Service.predict takes them (its entry point),
    before they are framed for the frontend."""
    from mms.service import Service

    headers, input_batch, req_id_map = Service.retrieve_data_for_inference(batch)
    service.context.request_ids, service.context.request_processor = req_id_map, headers
    return service._entry_point(input_batch, service.context)


def test_npy_accept_is_the_float32_probability_array_never_pickled(mms_service):
    """What the SDK's PyTorchPredictor asks for by default (NumpyDeserializer: Accept application/x-npy)."""
    png = _encoded(RED, "PNG")
    two = _npy(np.stack([np.asarray(RED)] * 2))
    gradcam = {"X_Amzn_SageMaker_Custom_Attributes": "explain=gradcam"}
    batch = [_request(0, png, ct.PNG, Accept=ct.NPY), _request(1, two, ct.NPY, Accept=ct.NPY),
             _request(2, png, ct.PNG, Accept=ct.NPY, **gradcam),
             _request(3, png, ct.PNG, **{"X_Amzn_SageMaker_Custom_Attributes": "probabilities=all"})]
    bodies = _bodies(mms_service, batch)
    ctx = mms_service.context
    assert [ctx.get_response_status(i)[0] for i in range(4)] == [200, 200, 406, 200]
    assert [ctx.get_response_content_type(i) for i in range(4)] == [ct.NPY, ct.NPY, ct.JSON, ct.JSON]
    one, both = (np.load(io.BytesIO(bodies[i]), allow_pickle=False) for i in (0, 1))
    assert one.dtype == np.float32 and one.shape == (1, 3) and both.shape == (2, 3)
    assert one.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(both[0], one[0], atol=1e-6)
    assert "only returned as application/json" in json.loads(bodies[2])["error"]
    as_json = json.loads(bodies[3])["predictions"][0]["probabilities"]
    np.testing.assert_allclose(one[0], as_json, atol=1e-6)


def test_model_outside_root_fails_to_load(monkeypatch, model_dir, tmp_path):
    from mms.model_loader import ModelLoaderFactory

    monkeypatch.setenv("BYOC_MODEL_ROOT", str(tmp_path))  # model_dir is elsewhere
    with pytest.raises(ValueError, match="outside the model root"):
        ModelLoaderFactory.get_model_loader(str(model_dir)).load(
            "m", str(model_dir), "container_serve.handler_service", None, 1)


def test_torch_allocation_failure_while_loading_becomes_507(monkeypatch, model_dir, tmp_path):
    """torch's CPU allocator raises RuntimeError, which load_model_artifact wraps in ModelArtifactError:
    the handler finds the out-of-memory condition behind it and raises MemoryError (MMS: 507)."""
    from mms.model_loader import ModelLoaderFactory

    from byoc_common import artifact
    from container_serve import load_reports

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: "
                           "you tried to allocate 102760448 bytes.")

    monkeypatch.setattr(artifact.torch, "load", no_memory)
    monkeypatch.setenv("BYOC_MODEL_ROOT", str(model_dir.parent))
    monkeypatch.setenv("BYOC_LOAD_REPORTS_DIR", str(tmp_path))
    with pytest.raises(MemoryError, match="out of memory"):
        ModelLoaderFactory.get_model_loader(str(model_dir)).load("m", str(model_dir),
                                                                 "container_serve.handler_service", None, 1)
    code, message = load_reports.take(tmp_path, "m")
    assert code == 507 and "DefaultCPUAllocator" in message


def test_out_of_memory_conditions_are_recognised():
    from container_serve.image_classifier_handler import as_memory_error

    wrapped = ModelArtifactError("model.pth does not load")
    wrapped.__cause__ = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes")
    for oom in (MemoryError("x"), torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), wrapped):
        assert isinstance(as_memory_error(oom), MemoryError)
    for not_oom in (RuntimeError("size mismatch for fc.weight"), ValueError("out of range"), wrapped.__class__("x")):
        assert as_memory_error(not_oom) is None


def test_memory_error_becomes_507(mms_service, monkeypatch):
    from container_serve import handler_service

    def out_of_memory(images):
        raise MemoryError("CPU allocator out of memory")

    monkeypatch.setattr(handler_service._service.handler, "inference", out_of_memory)
    resp = mms_service.predict([_request(0, _encoded(RED, "PNG"), ct.PNG)])
    assert struct.unpack("!i", resp[:4])[0] == 507


def test_a_bug_decoding_one_request_fails_only_that_request(mms_service, monkeypatch):
    """One request of an MMS batch that trips an unexpected error (or runs out of memory while being
    decoded) gets its own 500 (413); the others of the batch are answered."""
    from container_serve import handler_service

    decoder = handler_service._service.handler.decoder
    real_decode = decoder.decode

    def decode(body, content_type):
        if body == b"bug":
            raise ValueError("Exceeds the limit (4300 digits) for integer string conversion")
        if body == b"huge":
            raise MemoryError
        return real_decode(body, content_type)

    monkeypatch.setattr(decoder, "decode", decode)
    png = _encoded(RED, "PNG")
    mms_service.predict([_request(0, png, ct.PNG), _request(1, b"bug", ct.JSON), _request(2, b"huge", ct.NPY),
                         _request(3, png, ct.PNG)])
    assert [mms_service.context.get_response_status(i)[0] for i in range(4)] == [200, 500, 413, 200]


def test_unexpected_error_is_a_json_500_and_the_worker_carries_on(mms_service, monkeypatch):
    from container_serve import handler_service

    handler = handler_service._service.handler
    real_inference = handler.inference
    monkeypatch.setattr(handler, "inference", lambda images: 1 / 0)
    mms_service.predict([_request(0, _encoded(RED, "PNG"), ct.PNG)])
    assert mms_service.context.get_response_status(0)[0] == 500
    monkeypatch.setattr(handler, "inference", real_inference)
    mms_service.predict([_request(0, _encoded(RED, "PNG"), ct.PNG)])
    assert mms_service.context.get_response_status(0)[0] == 200


def test_mms_config_and_command_follow_the_settings(tmp_path):
    from container_serve.mms_process import HANDLER_SERVICE, mms_command, mms_properties, worker_environment

    multi = ServeSettings.from_env({"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_BIND_TO_PORT": "9001",
                                    "SAGEMAKER_MAX_PAYLOAD_IN_MB": "10", "BYOC_BIND_ADDRESS": "127.0.0.1"})
    props = dict(line.split("=", 1) for line in mms_properties(multi, tmp_path, tmp_path).splitlines())
    # MMS listens on Unix sockets only; the port belongs to the gate
    assert props["inference_address"] == f"unix:{tmp_path}/inference.sock"
    assert props["management_address"] == f"unix:{tmp_path}/management.sock"
    assert props["enable_envvars_config"] == "false"   # no MMS_* variable reconfigures it
    assert props["default_service_handler"] == HANDLER_SERVICE
    assert props["max_request_size"] == str(10 * 1024 * 1024)
    assert props["plugins_path"] == str(tmp_path)
    assert props["decode_input_request"] == "false"      # from the toolkit's defaults
    assert not any("$$" in v for v in props.values())    # no unfilled toolkit placeholders
    assert "--models" not in mms_command(multi, tmp_path / "c")
    env = worker_environment(multi, tmp_path, plugins_available=False)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["BYOC_TORCH_THREADS"] == "1"
    assert env["BYOC_LOAD_REPORTS_DIR"] == str(tmp_path / "load-reports")

    single = ServeSettings.from_env({"BYOC_MODEL_ROOT": str(tmp_path)})
    assert "plugins_path" not in mms_properties(single, tmp_path, None)
    cmd = mms_command(single, tmp_path / "c")
    assert cmd[cmd.index("--models") + 1] == f"model={tmp_path}"
