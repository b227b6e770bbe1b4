"""The model directory rule (container_serve.model_layout), for both endpoint kinds: inert extras beside
the artifact are ignored with one log line, whatever could choose code or a location is refused with the
reason. Fast: no server, no torch model."""

from __future__ import annotations

import logging
import os

import pytest

from container_serve.model_layout import MAX_ENTRIES, ModelDirError, check_model_dir

FILES = ("model.pth", "classes.json", "model_config.json")


@pytest.fixture
def model(tmp_path):
    d = tmp_path / "root" / "model"
    d.mkdir(parents=True)
    for name in FILES:
        (d / name).write_text("{}")
    return d


def test_the_sdk_local_mode_layout_is_served_and_logged_once(model, caplog):
    """What SageMaker Python SDK local mode mounts at /opt/ml/model: the archive it extracted, beside
    the files it extracted from it (sagemaker/local/image.py _prepare_serving_volumes)."""
    for name in ("model.tar.gz", "output.tar.gz", ".DS_Store", "README.md", "weights.pth"):
        (model / name).write_bytes(b"\x1f\x8b not code")
    with caplog.at_level(logging.INFO, logger="container_serve.model_layout"):
        assert check_model_dir(model, model.parent) == model.resolve()
        assert check_model_dir(model, model.parent, log_ignored=False) == model.resolve()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "ignoring 5 file(s)" in lines[0] and "model.tar.gz" in lines[0] and "output.tar.gz" in lines[0]


def test_exactly_the_artifact_logs_nothing(model, caplog):
    with caplog.at_level(logging.INFO, logger="container_serve.model_layout"):
        check_model_dir(model, model.parent)
    assert caplog.records == []


@pytest.mark.parametrize("name,reason", [
    ("torch.py", "Python or native code"), ("handler.PY", "Python or native code"),
    ("torch.pyc", "Python or native code"), ("_C.so", "Python or native code"),
    ("torch.cpython-311-x86_64-linux-gnu.so", "Python or native code"), ("x.abi3.so", "Python or native code"),
    ("MANIFEST.json", "an MMS manifest"), ("manifest.JSON", "an MMS manifest"),
])
def test_code_and_manifests_are_refused_with_the_reason(model, name, reason):
    (model / name).write_text("print('code')")
    with pytest.raises(ModelDirError, match="holds more than the model artifact") as err:
        check_model_dir(model, model.parent)
    assert f"{name} ({reason})" in str(err.value) and err.value.status == 400


@pytest.mark.parametrize("kind", ["MAR-INF folder", "package folder", "namespace folder", "link inside",
                                  "link leaving the root", "fifo"])
def test_folders_links_and_special_files_are_refused(model, tmp_path, kind):
    if kind == "MAR-INF folder":
        (model / "MAR-INF").mkdir()
        (model / "MAR-INF" / "MANIFEST.json").write_text("{}")
        name, reason = "MAR-INF", "a folder"
    elif kind == "package folder":
        (model / "mms").mkdir()
        (model / "mms" / "__init__.py").write_text("")
        name, reason = "mms", "a folder"
    elif kind == "namespace folder":                # no __init__.py: still importable
        (model / "code").mkdir()
        name, reason = "code", "a folder"
    elif kind == "link inside":
        (model / "copy.tar.gz").symlink_to(model / "classes.json")
        name, reason = "copy.tar.gz", "a symbolic link"
    elif kind == "link leaving the root":
        (model / "etc.tar.gz").symlink_to("/etc")
        name, reason = "etc.tar.gz", "a symbolic link"
    else:
        os.mkfifo(model / "pipe")
        name, reason = "pipe", "not a regular file"
    with pytest.raises(ModelDirError) as err:
        check_model_dir(model, model.parent)
    assert name in str(err.value) and reason in str(err.value)


def test_a_device_file_is_refused(model):
    if not os.access("/dev/null", os.R_OK):
        pytest.skip("no /dev/null")
    try:
        os.mknod(model / "null.bin", 0o600 | 0o020000, os.makedev(1, 3))   # S_IFCHR, like /dev/null
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    with pytest.raises(ModelDirError, match=r"null\.bin \(not a regular file\)"):
        check_model_dir(model, model.parent)


def test_the_three_artifact_files_stay_required_and_regular(model):
    (model / "model.tar.gz").write_bytes(b"x")
    (model / "classes.json").unlink()
    with pytest.raises(ModelDirError, match="missing classes.json"):
        check_model_dir(model, model.parent)
    (model / "classes.json").symlink_to(model / "model_config.json")
    with pytest.raises(ModelDirError, match="classes.json must be regular files"):
        check_model_dir(model, model.parent)


def test_a_directory_with_too_many_entries_is_refused_without_listing_it_all(model):
    for n in range(MAX_ENTRIES):
        (model / f"part-{n}.bin").write_bytes(b"")
    with pytest.raises(ModelDirError, match=f"more than {MAX_ENTRIES} entries"):
        check_model_dir(model, model.parent)
