"""Integration tests: the real multi-model-server on 127.0.0.1 serving models from the real trainer."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import threading
import time

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from byoc.local.endpoint import LocalEndpoint
from byoc_common.artifact import load_model_artifact
from byoc_common.preprocessing import eval_transform
from container_serve import content_types as ct
from container_serve import model_form
from container_serve.model_archive import deploy_model
from container_train.data import ImageFolderDataset, scan_split

pytestmark = pytest.mark.slow

MAX_PAYLOAD_BYTES = 1 * 1024 * 1024  # conftest.MAX_PAYLOAD_MB
WORKER_DIED = re.compile(r"Backend worker process died|Worker died|WORKER_STOPPED|worker.*restart", re.I)


def _jpeg(model) -> bytes:
    return model.test_images()[0].read_bytes()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _log_shows(endpoint, text: str, timeout: float = 10.0) -> bool:
    """MMS logs worker output asynchronously: give a line a moment to arrive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in endpoint.log_text():
            return True
        time.sleep(0.2)
    return False


def _json(body: bytes):
    return json.loads(body.decode("utf-8"))


# ---- multi-model API ---------------------------------------------------------------------------

def test_two_models_load_and_answer_by_name(loaded_endpoint, trained_models):
    for name, model in trained_models.items():
        status, headers, body = loaded_endpoint.client.invoke(_jpeg(model), ct.JPEG, target_model=name)
        assert status == 200, body
        assert headers["content-type"] == ct.JSON
        preds = _json(body)["predictions"]
        assert len(preds) == 1
        assert preds[0]["label"] in model.classes
        assert len(preds[0]["top_k"]) == len(model.classes)  # the default topk=5 is capped
        assert {p["label"] for p in preds[0]["top_k"]} == set(model.classes)
        assert sum(p["probability"] for p in preds[0]["top_k"]) == pytest.approx(1.0, abs=1e-5)
    # the two models really are different models (different class sets)
    a, b = (set(m.classes) for m in trained_models.values())
    assert a.isdisjoint(b)


def test_duplicate_load_is_409(loaded_endpoint):
    reply = loaded_endpoint.client.load_model("shapes-a", loaded_endpoint.model_url("shapes-a"))
    status, body = reply.status, reply.json()
    assert status == 409, body


def test_list_models_paginates(loaded_endpoint, trained_models):
    reply = loaded_endpoint.client.list_models(limit=1)
    status, page1 = reply.status, reply.json()
    assert status == 200
    assert len(page1["models"]) == 1 and page1["nextPageToken"] == "1"
    reply = loaded_endpoint.client.list_models(limit=1, next_page_token=page1["nextPageToken"])
    status, page2 = reply.status, reply.json()
    assert status == 200 and len(page2["models"]) == 1
    assert page1["models"][0]["modelName"] < page2["models"][0]["modelName"]  # sorted, no repeats
    reply = loaded_endpoint.client.list_models()
    status, everything = reply.status, reply.json()
    listed = {m["modelName"]: m["modelUrl"] for m in everything["models"]}
    assert "nextPageToken" not in everything
    for name in trained_models:
        assert listed[name] == loaded_endpoint.model_url(name)


def test_describe_model(loaded_endpoint, trained_models):
    reply = loaded_endpoint.client.describe_model("shapes-b")
    status, desc = reply.status, reply.json()
    assert status == 200, desc
    assert desc["modelName"] == "shapes-b"
    assert desc["modelUrl"] == loaded_endpoint.model_url("shapes-b")
    assert desc["workers"] and desc["workers"][0]["status"] == "READY"


def test_unknown_model_is_404(loaded_endpoint, trained_models):
    status, _, body = loaded_endpoint.client.invoke(_jpeg(trained_models["shapes-a"]), ct.JPEG, target_model="nope")
    assert status == 404
    assert loaded_endpoint.client.describe_model("nope").status == 404
    assert loaded_endpoint.client.unload_model("nope").status == 404


def test_unload_model(loaded_endpoint, trained_models):
    loaded_endpoint.deploy("shapes-b-copy", trained_models["shapes-b"].archive)
    assert loaded_endpoint.client.load_model("shapes-b-copy", loaded_endpoint.model_url("shapes-b-copy")).status == 200
    image = _jpeg(trained_models["shapes-b"])
    assert loaded_endpoint.client.invoke(image, ct.JPEG, target_model="shapes-b-copy")[0] == 200
    reply = loaded_endpoint.client.unload_model("shapes-b-copy")
    status, body = reply.status, reply.json()
    assert status == 200, body
    assert loaded_endpoint.client.invoke(image, ct.JPEG, target_model="shapes-b-copy")[0] == 404
    assert "shapes-b-copy" not in {m["modelName"] for m in loaded_endpoint.client.list_models().json()["models"]}
    # the other models are untouched
    assert loaded_endpoint.client.invoke(image, ct.JPEG, target_model="shapes-b")[0] == 200


def test_server_side_batching_answers_each_request(tmp_path, loaded_endpoint, trained_models):
    """With BYOC_BATCH_SIZE, MMS hands the handler several requests at once; each still gets its own
    answer or its own error. The batch size is the number of requests sent together and the delay far
    longer than sending them takes, so MMS fills exactly one batch (no timing involved)."""
    model = trained_models["shapes-a"]
    good = {p.name: p.read_bytes() for p in model.test_images()}
    expected = {name: _json(loaded_endpoint.client.invoke(data, ct.JPEG, target_model="shapes-a")[2])["predictions"][0]
                for name, data in good.items()}
    jobs = [(name, data, ct.JPEG) for name, data in good.items()] + [("bad", b"junk", ct.JPEG)] * 2
    env = {"BYOC_BATCH_SIZE": str(len(jobs)), "BYOC_MAX_BATCH_DELAY_MS": "60000"}
    with LocalEndpoint(model_root=tmp_path / "models", multi_model=True, env=env,
                       log_file=tmp_path / "endpoint.log") as ep:
        ep.deploy("batched", model.archive)
        assert ep.client.load_model("batched", ep.model_url("batched")).status == 200
        assert ep.client.describe_model("batched").json()["batchSize"] == len(jobs)
        results: dict[int, tuple] = {}

        def call(i, data, kind):
            results[i] = ep.client.invoke(data, kind, target_model="batched")

        threads = [threading.Thread(target=call, args=(i, data, kind)) for i, (_, data, kind) in enumerate(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, (name, _, _) in enumerate(jobs):
            status, _, body = results[i]
            if name == "bad":
                assert status == 400, body
            else:
                assert status == 200, body
                assert _json(body)["predictions"][0]["probability"] == pytest.approx(expected[name]["probability"],
                                                                                      abs=1e-5)
        assert _log_shows(ep, f"model batched: handling a batch of {len(jobs)} requests")


def test_sagemaker_style_nested_model_url(loaded_endpoint, trained_models):
    """SageMaker unpacks a model to /opt/ml/models/<id>/model and sends that directory as url."""
    url = deploy_model(trained_models["shapes-a"].archive, loaded_endpoint.model_root / "0f1e2d3c", "model")
    reply = loaded_endpoint.client.load_model("by-sagemaker-id", str(url))
    status, body = reply.status, reply.json()
    assert status == 200, body
    status, _, body = loaded_endpoint.client.invoke(_jpeg(trained_models["shapes-a"]), ct.JPEG, target_model="by-sagemaker-id")
    assert status == 200 and _json(body)["predictions"][0]["label"] in trained_models["shapes-a"].classes
    assert loaded_endpoint.client.unload_model("by-sagemaker-id").status == 200


def test_model_url_outside_model_root_is_refused(loaded_endpoint, trained_models, tmp_path):
    # a perfectly good model, but not under the model root: the gate answers before MMS sees it
    reply = loaded_endpoint.client.load_model("outsider", str(trained_models["shapes-a"].model_dir))
    assert reply.status == 400, reply.body
    assert "outside the model root" in reply.json()["error"]
    assert "outsider" not in {m["modelName"] for m in loaded_endpoint.client.list_models().json()["models"]}
    sneaky = f"{loaded_endpoint.model_root}/../../{trained_models['shapes-a'].model_dir}"
    reply = loaded_endpoint.client.load_model("sneaky", sneaky)
    assert reply.status == 400, reply.body
    assert "'..'" in reply.json()["error"]


def test_inert_extras_load_and_code_is_refused_with_the_reason(loaded_endpoint, trained_models):
    """The model directory rule holds for multi-model loads too (container_serve.model_layout)."""
    extras = loaded_endpoint.deploy("with-extras", trained_models["shapes-a"].archive)
    shutil.copy(trained_models["shapes-a"].archive, extras / "model.tar.gz")
    reply = loaded_endpoint.client.load_model("with-extras", loaded_endpoint.model_url("with-extras"))
    assert reply.status == 200, reply.body
    assert _log_shows(loaded_endpoint, "ignoring 1 file(s) beside the model artifact: model.tar.gz")
    assert loaded_endpoint.client.unload_model("with-extras").status == 200
    coded = loaded_endpoint.deploy("with-code", trained_models["shapes-a"].archive)
    (coded / "torch.py").write_text("raise SystemExit('imported')")
    reply = loaded_endpoint.client.load_model("with-code", loaded_endpoint.model_url("with-code"))
    assert reply.status == 400, reply.body
    assert "torch.py (Python or native code)" in reply.json()["error"]


def test_npy_response(loaded_endpoint, trained_models):
    model = trained_models["shapes-a"]
    status, headers, body = loaded_endpoint.client.invoke(_jpeg(model), ct.JPEG, accept=ct.NPY, target_model="shapes-a")
    assert status == 200, body
    probabilities = np.load(io.BytesIO(body), allow_pickle=False)
    assert probabilities.dtype == np.float32 and probabilities.shape == (1, len(model.classes))
    status, _, body = loaded_endpoint.client.invoke(_jpeg(model), ct.JPEG, accept="application/x-pickle",
                                                    target_model="shapes-a")
    assert status == 406 and "application/x-npy" in _json(body)["error"]


def test_model_that_does_not_load_is_not_registered(loaded_endpoint, trained_models):
    broken = loaded_endpoint.model_root / "broken"
    broken.mkdir()
    (broken / "model_config.json").write_text("{}")
    reply = loaded_endpoint.client.load_model("broken", loaded_endpoint.model_url("broken"))
    assert reply.status == 400, reply.body          # the gate: files missing
    assert "missing" in reply.json()["error"]
    # all the files, but weights of another model: the worker refuses it and says why
    wrong = loaded_endpoint.deploy("wrong-weights", trained_models["shapes-a"].archive)
    (wrong / "model.pth").write_bytes((trained_models["shapes-b"].model_dir / "model.pth").read_bytes())
    reply = loaded_endpoint.client.load_model("wrong-weights", loaded_endpoint.model_url("wrong-weights"))
    assert reply.status == 400, reply.body
    assert "does not load" in reply.json()["error"]
    listed = {m["modelName"] for m in loaded_endpoint.client.list_models().json()["models"]}
    assert not {"broken", "wrong-weights"} & listed


# ---- request errors ------------------------------------------------------------------------------

def _truncated_jpeg(model) -> bytes:
    data = _jpeg(model)
    return data[: len(data) // 2]


def _bomb_png() -> bytes:
    # 8000 x 6000 = 48 Mpx of one colour: a ~50 KB file that would need 144 MB decoded
    return _png(Image.new("L", (8000, 6000)))


ERROR_CASES = {
    "unsupported content type": (lambda m: b"hello", "text/plain", None, None, 415),
    "form data": (lambda m: b"a=b", "application/x-www-form-urlencoded", None, None, 415),
    "undecodable image": (lambda m: b"\x89PNG but not really", ct.PNG, None, None, 400),
    "truncated image": (_truncated_jpeg, ct.JPEG, None, None, 400),
    "empty body": (lambda m: b"", ct.JPEG, None, None, 400),
    "malformed json": (lambda m: b'{"instances": [', ct.JSON, None, None, 400),
    "json without instances": (lambda m: b'{"image": 1}', ct.JSON, None, None, 400),
    "bad base64": (lambda m: b'"***not base64***"', ct.JSON, None, None, 400),
    "npy wrong shape": (lambda m: _npy(np.zeros((4, 4), np.uint8)), ct.NPY, None, None, 400),
    "npy wrong channels": (lambda m: _npy(np.zeros((8, 8, 5), np.uint8)), ct.NPY, None, None, 400),
    "npy wrong dtype": (lambda m: _npy(np.zeros((3, 8, 8), np.complex64)), ct.NPY, None, None, 400),
    "npy float out of range": (lambda m: _npy(np.full((3, 8, 8), 7.0, np.float32)), ct.NPY, None, None, 400),
    "npy pickled object array": (lambda m: _npy(np.array([{"a": 1}], dtype=object)), ct.NPY, None, None, 400),
    "not npy at all": (lambda m: b"\x93NUMPY garbage", ct.NPY, None, None, 400),
    "decompression bomb": (lambda m: _bomb_png(), ct.PNG, None, None, 413),
    "unproducible accept": (_jpeg, ct.JPEG, "image/png", None, 406),
    "bad topk": (_jpeg, ct.JPEG, None, "topk=zero", 400),
    "unknown explainer": (_jpeg, ct.JPEG, None, "explain=shap", 400),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_requests_get_a_clear_json_error(loaded_endpoint, trained_models, case):
    make_body, content_type, accept, attrs, expected = ERROR_CASES[case]
    status, headers, body = loaded_endpoint.client.invoke(make_body(trained_models["shapes-a"]), content_type,
                                                   accept=accept, target_model="shapes-a", custom_attributes=attrs)
    assert status == expected, body
    doc = _json(body)
    assert doc["code"] == expected and isinstance(doc["error"], str) and doc["error"]


def test_payload_over_the_limit_is_413(loaded_endpoint):
    body = b"\xff\xd8" + b"\0" * (MAX_PAYLOAD_BYTES + 1024)
    try:
        status, _, _ = loaded_endpoint.client.invoke(body, ct.JPEG, target_model="shapes-a")
    except (ConnectionError, OSError):  # the server may close the socket while we still send
        pytest.fail("server reset the connection instead of answering 413")
    assert status == 413


def test_server_survives_200_mixed_requests_without_worker_restart(loaded_endpoint, trained_models):
    model = trained_models["shapes-a"]
    reply = loaded_endpoint.client.describe_model("shapes-a")
    _, before = reply.status, reply.json()
    log_before = loaded_endpoint.log_text()
    good = _jpeg(model)
    bad = [(b"junk", ct.JPEG, 400), (b"x", "text/plain", 415), (_truncated_jpeg(model), ct.JPEG, 400),
           (_npy(np.zeros((2, 2), np.uint8)), ct.NPY, 400), (b"{", ct.JSON, 400)]
    for i in range(200):
        if i % 2 == 0:
            status, _, body = loaded_endpoint.client.invoke(good, ct.JPEG, target_model="shapes-a")
            assert status == 200, (i, body)
        else:
            data, kind, expected = bad[(i // 2) % len(bad)]
            status, _, body = loaded_endpoint.client.invoke(data, kind, target_model="shapes-a")
            assert status == expected, (i, body)
    reply = loaded_endpoint.client.describe_model("shapes-a")
    _, after = reply.status, reply.json()
    assert [(w["id"], w["startTime"]) for w in after["workers"]] == \
        [(w["id"], w["startTime"]) for w in before["workers"]]
    # only this model's workers: a failed load of another model logs its own worker's death a moment later
    new_log = "\n".join(ln for ln in loaded_endpoint.log_text()[len(log_before):].splitlines()
                        if re.search(r"W-\d+-shapes-a(-stdout|-stderr)? ", ln))
    assert not WORKER_DIED.search(new_log), WORKER_DIED.search(new_log).group(0)


# ---- responses -----------------------------------------------------------------------------------

def test_known_image_matches_the_trainers_evaluation(loaded_endpoint, trained_models):
    """The server's probabilities equal what the trainer's own eval pipeline computes for the image."""
    for name, model in trained_models.items():
        net, classes, config = load_model_artifact(model.model_dir)
        split = scan_split("test", model.data_root / "test")
        (tensor, _label), path, err = ImageFolderDataset(split, eval_transform(config))[0]
        assert err is None
        with torch.no_grad():
            expected = torch.softmax(net(tensor.unsqueeze(0)), dim=1)[0]
        status, _, body = loaded_endpoint.client.invoke(open(path, "rb").read(), ct.JPEG, target_model=name,
                                                 custom_attributes="probabilities=all")
        assert status == 200, body
        doc = _json(body)
        assert doc["classes"] == classes
        got = torch.tensor(doc["predictions"][0]["probabilities"])
        # The served form is bf16 on a CPU with native bf16 (container_serve/model_form.py, with its
        # stated tolerance); float32 elsewhere, where the answer is the trainer's to 1e-4.
        tolerance = model_form.BF16_MAX_PROBABILITY_DIFF if model_form.cpu_has_bf16() else 1e-4
        assert torch.allclose(got, expected, atol=tolerance), (got, expected)
        assert doc["predictions"][0]["index"] == int(expected.argmax())


def test_gradcam_heatmap_is_a_png(loaded_endpoint, trained_models):
    status, _, body = loaded_endpoint.client.invoke(_jpeg(trained_models["shapes-b"]), ct.JPEG, target_model="shapes-b",
                                             custom_attributes="explain=gradcam, topk=1")
    assert status == 200, body
    pred = _json(body)["predictions"][0]
    assert len(pred["top_k"]) == 1
    cam = pred["gradcam"]
    assert cam["index"] == pred["index"] and cam["content_type"] == ct.PNG
    img = Image.open(io.BytesIO(base64.b64decode(cam["data"])))
    assert img.format == "PNG" and img.mode == "RGB"
    assert img.size == (32, 32)  # the model's input size
    heat = Image.open(io.BytesIO(base64.b64decode(cam["heatmap"])))   # the raw map, for a client's figure
    assert heat.format == "PNG" and heat.mode == "L" and heat.size == (32, 32)
    assert np.asarray(heat).max() in (0, 255)   # normalised to 0..1 (or all zero) before the 8-bit scaling


def test_csv_output(loaded_endpoint, trained_models):
    model = trained_models["shapes-a"]
    status, headers, body = loaded_endpoint.client.invoke(_jpeg(model), ct.JPEG, accept=ct.CSV, target_model="shapes-a",
                                                   custom_attributes="topk=2")
    assert status == 200, body
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == ["image", "rank", "label", "index", "probability"]
    assert [r[1] for r in rows[1:]] == ["1", "2"]
    assert all(r[2] in model.classes for r in rows[1:])
    status, _, body = loaded_endpoint.client.invoke(_jpeg(model), ct.JPEG, accept=ct.CSV, target_model="shapes-a",
                                             custom_attributes="probabilities=all")
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == ["image", *model.classes]
    assert sum(float(x) for x in rows[1][1:]) == pytest.approx(1.0, abs=1e-4)


def test_several_images_in_one_json_request(loaded_endpoint, trained_models):
    model = trained_models["shapes-a"]
    images = [p.read_bytes() for p in model.test_images()[:3]]
    payload = json.dumps({"instances": [base64.b64encode(b).decode() for b in images]}).encode()
    status, _, body = loaded_endpoint.client.invoke(payload, ct.JSON, target_model="shapes-a")
    assert status == 200, body
    preds = _json(body)["predictions"]
    assert len(preds) == 3
    # each answer equals the answer for that image sent alone
    for data, pred in zip(images, preds, strict=True):
        alone = _json(loaded_endpoint.client.invoke(data, ct.JPEG, target_model="shapes-a")[2])["predictions"][0]
        assert pred["index"] == alone["index"]
        assert pred["probability"] == pytest.approx(alone["probability"], abs=1e-5)


def test_execution_parameters(multi_endpoint):
    status, _, body = multi_endpoint.client.request("GET", "/execution-parameters")
    assert status == 200, body
    assert _json(body) == {"MaxConcurrentTransforms": 1, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 1}


# ---- single model --------------------------------------------------------------------------------

def test_single_model_invocations(single_endpoint, trained_models):
    model = trained_models["shapes-a"]
    assert "ignoring 2 file(s) beside the model artifact: model.tar.gz, output.tar.gz" in single_endpoint.log_text()
    jpeg = _jpeg(model)
    status, _, body = single_endpoint.client.invoke(jpeg, ct.JPEG)
    assert status == 200, body
    by_jpeg = _json(body)["predictions"][0]
    assert by_jpeg["label"] in model.classes

    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))          # uint8 HWC
    status, _, body = single_endpoint.client.invoke(_npy(pixels), ct.NPY)
    assert status == 200, body
    assert _json(body)["predictions"][0]["probability"] == pytest.approx(by_jpeg["probability"], abs=1e-5)

    floats = pixels.transpose(2, 0, 1)[None].astype(np.float32) / 255.0        # float NCHW in [0, 1]
    status, _, body = single_endpoint.client.invoke(_npy(floats), ct.NPY)
    assert status == 200, body
    # float pixels are resized without the uint8 rounding the JPEG path has: close, not identical
    assert _json(body)["predictions"][0]["probability"] == pytest.approx(by_jpeg["probability"], abs=5e-3)

    status, _, body = single_endpoint.client.invoke(json.dumps(pixels.tolist()).encode(), ct.JSON)  # nested lists
    assert status == 200, body
    assert _json(body)["predictions"][0]["probability"] == pytest.approx(by_jpeg["probability"], abs=1e-5)

    assert single_endpoint.client.invoke(b"junk", ct.JPEG)[0] == 400


def test_batch_transform_endpoint_and_clean_sigterm(tmp_path, trained_models):
    """SAGEMAKER_BATCH with a bigger SAGEMAKER_MAX_PAYLOAD_IN_MB: the limit is advertised and honoured;
    SIGTERM then stops the Java frontend and every python worker."""
    model = trained_models["shapes-b"]
    ep = LocalEndpoint(model_root=model.model_dir, multi_model=False, log_file=tmp_path / "endpoint.log",
                       env={"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "12"})
    with ep:
        status, _, body = ep.client.request("GET", "/execution-parameters")
        assert status == 200 and _json(body)["MaxPayloadInMB"] == 12
        big = _npy(np.random.default_rng(0).integers(0, 256, (1500, 1800, 3), dtype=np.uint8))  # 8.1 MB
        assert MAX_PAYLOAD_BYTES * 6 < len(big) < 12 * 1024 * 1024
        status, _, body = ep.client.invoke(big, ct.NPY)
        assert status == 200, body
        tree = psutil.Process(ep._proc.pid).children(recursive=True)
        assert any("java" in p.name() for p in tree)
        assert any("model_service_worker" in " ".join(p.cmdline()) for p in tree)
        code = ep.stop()
    assert code == 0, ep.log_text()[-2000:]
    alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, alive
