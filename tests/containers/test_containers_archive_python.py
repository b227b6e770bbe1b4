"""model.tar.gz unpacking on the oldest Python the project allows (issue 28, item 16).

``tarfile``'s extraction filters (``filter="data"``) exist from Python 3.11.4; the serving image's base
(``BASE_IMAGE`` in docker/serve.Dockerfile, Debian bookworm's Python here: 3.11.2) has none, and
``pyproject.toml`` allows ``>=3.11``. The unpacker (container_serve/tar_unpack.py, torch-free) runs there,
on a real artifact's archive and on hostile ones made here, and must unpack the first byte for byte and
refuse every other with its reason.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile

import pytest
import torch

from byoc_common.architectures import build_classifier
from byoc_common.artifact import ARTIFACT_FILES, ModelConfig, read_model_metadata, save_model_artifact
from container_serve.model_archive import create_model_archive
from tests.containers.conftest import REPO_ROOT

pytestmark = pytest.mark.container

SCRIPT = """
import json, sys, tarfile
from pathlib import Path
sys.path.insert(0, "/src")
from byoc_common.artifact_files import ARTIFACT_FILES
from container_serve.tar_unpack import UnsafeArchiveError, unpack_flat
out = {"python": list(sys.version_info[:3]), "data_filter": hasattr(tarfile, "data_filter")}
for archive in sorted(Path("/work/in").iterdir()):
    try:
        out[archive.name] = ["unpacked", unpack_flat(archive, Path("/work/out") / archive.name, ARTIFACT_FILES, 1 << 30)]
    except UnsafeArchiveError as e:
        out[archive.name] = ["refused", str(e), (Path("/work/out") / archive.name).exists()]
print(json.dumps(out))
"""


def _base_image() -> str:
    dockerfile = (REPO_ROOT / "docker" / "serve.Dockerfile").read_text()
    return re.search(r"^ARG BASE_IMAGE=(\S+)", dockerfile, re.M).group(1)


def _tar(path, members: list[tuple[str, bytes, bytes]]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            info.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


HOSTILE = {  # archive name -> (members, words of the refusal)
    "parent.tar.gz": ([("../escape.txt", tarfile.REGTYPE, b"x")], "escapes"),
    "absolute.tar.gz": ([("/tmp/escape.txt", tarfile.REGTYPE, b"x")], "absolute"),
    "symlink.tar.gz": ([("model.pth", tarfile.SYMTYPE, b"")], "link"),
    "hardlink.tar.gz": ([("model.pth", tarfile.LNKTYPE, b"")], "link"),
    "fifo.tar.gz": ([("model.pth", tarfile.FIFOTYPE, b"")], "not a regular file"),
    "device.tar.gz": ([("model.pth", tarfile.CHRTYPE, b"")], "not a regular file"),
    "code.tar.gz": ([("model.pth", tarfile.REGTYPE, b"w"), ("handler.py", tarfile.REGTYPE, b"import os")],
                    "not part of a model artifact"),
    "twice.tar.gz": ([("model.pth", tarfile.REGTYPE, b"a"), ("./model.pth", tarfile.REGTYPE, b"b")], "twice"),
    "many.tar.gz": ([("./", tarfile.DIRTYPE, b"")] * 50, "more than 4 members"),
}


def test_archives_unpack_and_are_refused_on_the_serving_images_python(docker, tmp_path):
    model = save_model_artifact(tmp_path / "model", build_classifier("resnet18", 3), ["a", "b", "c"],
                                ModelConfig("resnet18", 3, image_size=32, resize_size=36))
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    create_model_archive(model, tmp_path / "in" / "model.tar.gz")
    for name, (members, _) in HOSTILE.items():
        _tar(tmp_path / "in" / name, members)
    proc = docker("run", "--rm", "--network", "host", "--user", f"{os.getuid()}:{os.getgid()}",
                  "-v", f"{REPO_ROOT}:/src:ro", "-v", f"{tmp_path}:/work", _base_image(),
                  "python3", "-c", SCRIPT, timeout=300)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print("container Python", result["python"], "tarfile.data_filter:", result["data_filter"])
    if tuple(result["python"]) < (3, 11, 4):
        assert result["data_filter"] is False  # the Python this test is about
    assert result["model.tar.gz"] == ["unpacked", list(ARTIFACT_FILES)], result["model.tar.gz"]
    unpacked = tmp_path / "out" / "model.tar.gz"
    assert read_model_metadata(unpacked)[1] == ["a", "b", "c"]
    for name in ARTIFACT_FILES:
        assert (unpacked / name).read_bytes() == (model / name).read_bytes(), name
    assert torch.load(unpacked / "model.pth", weights_only=True).keys() == build_classifier("resnet18", 3).state_dict().keys()
    for name, (_, words) in HOSTILE.items():
        outcome, reason, left_behind = result[name]
        assert outcome == "refused" and words in reason, (name, result[name])
        assert not left_behind, name
    assert not (tmp_path / "escape.txt").exists()
