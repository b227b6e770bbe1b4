"""byoc data: the dogImages download (against a local HTTP server on 127.0.0.1), resume, unzip
safety, ImageFolder validation, and the offline sources."""

from __future__ import annotations

import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from byoc.cli import main
from byoc.datasets import prepare as datasets
from byoc.datasets.synthetic import make_dataset
from tests.helpers import required


def _dog_zip(tmp_path) -> bytes:
    """A small zip laid out like dogImages.zip (dogImages/train|valid|test/NNN.Breed/*.jpg)."""
    src = make_dataset(tmp_path / "src" / "dogImages", num_classes=3, per_class=2, size=32,
                       class_names=["001.Affenpinscher", "002.Afghan_hound", "003.Airedale_terrier"])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(src.parent).as_posix())
    return buf.getvalue()


class _Server:
    """Serves one payload with HTTP Range support; can cut the first response short."""

    def __init__(self, payload: bytes, cut_first_at: int | None = None):
        self.payload, self.cut_first_at, self.requests = payload, cut_first_at, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.requests.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = outer.payload[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.payload) - 1}/{len(outer.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut_first_at is not None and len(outer.requests) == 1:
                    self.wfile.write(body[:outer.cut_first_at])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # connection drops mid-download
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/dogImages.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def dog_server(tmp_path):
    servers = []

    def make(**kw):
        s = _Server(_dog_zip(tmp_path), **kw)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.close()


def test_dogimages_download_extract_validate(dog_server, tmp_path):
    server = dog_server()
    progress = []
    summary = datasets.prepare("dogimages", tmp_path / "dl", url=server.url,
                               on_download=lambda d, t: progress.append((d, t)))
    assert summary.source == "dogimages"
    assert summary.classes == ["001.Affenpinscher", "002.Afghan_hound", "003.Airedale_terrier"]
    assert summary.counts == {"train": 6, "valid": 6, "test": 6}
    assert progress[-1] == (len(server.payload), len(server.payload))
    # A second run finds everything done and downloads nothing.
    datasets.prepare("dogimages", tmp_path / "dl", url=server.url)
    assert server.requests == [None]


def test_interrupted_download_resumes_with_range(dog_server, tmp_path):
    server = dog_server(cut_first_at=300)
    with pytest.raises(datasets.DatasetError, match="re-run"):
        # Small chunks: everything received before the drop is on disk (a chunk in flight is lost).
        datasets.download(server.url, tmp_path / "d.zip", chunk_size=100)
    part = tmp_path / "d.zip.part"
    assert part.stat().st_size == 300 and not (tmp_path / "d.zip").exists()
    datasets.download(server.url, tmp_path / "d.zip")
    assert server.requests == [None, "bytes=300-"]
    assert (tmp_path / "d.zip").read_bytes() == server.payload


def test_cli_data_dogimages_with_url(dog_server, tmp_path, capsys):
    server = dog_server()
    rc = main(["data", "--source", "dogimages", "--url", server.url, "--dest", str(tmp_path / "dogs")])
    assert rc == 0
    assert "dataset ready" in capsys.readouterr().out


def test_download_unreachable_is_clear(tmp_path):
    with pytest.raises(datasets.DatasetError, match="cannot download .* resume"):
        datasets.download("http://127.0.0.1:1/none.zip", tmp_path / "x.zip", timeout=2)


def test_zip_slip_refused(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(datasets.DatasetError, match="outside"):
        datasets.safe_extract_zip(bad, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_validate_imagefolder_errors(tmp_path):
    root = make_dataset(tmp_path / "ds", num_classes=2, per_class=1, size=16)
    assert datasets.validate_imagefolder(root).counts == {"train": 2, "valid": 2, "test": 2}
    (root / "valid" / "001.Class_a").rename(root / "valid" / "009.Other")
    with pytest.raises(datasets.DatasetError, match="differ between train/ and valid/"):
        datasets.validate_imagefolder(root)
    with pytest.raises(datasets.DatasetError, match="missing test/"):
        datasets.validate_imagefolder(_without(tmp_path / "nt", "test"))
    with pytest.raises(datasets.DatasetError, match="not a folder"):
        datasets.validate_imagefolder(tmp_path / "nope")


def _without(root, split):
    make_dataset(root, num_classes=2, per_class=1, size=16)
    import shutil

    shutil.rmtree(root / split)
    return root


def test_empty_class_folder(tmp_path):
    root = make_dataset(tmp_path / "ds", num_classes=2, per_class=1, size=16)
    for p in (root / "train" / "002.Class_b").iterdir():
        p.unlink()
    with pytest.raises(datasets.DatasetError, match="holds no images"):
        datasets.validate_imagefolder(root)


def test_auto_prefers_fashion_mnist(tmp_path):
    if not datasets.fashion_mnist_available():
        required.missing("Debian dataset-fashion-mnist is not installed (make setup)")
    s = datasets.prepare("auto", tmp_path / "fm", per_class=2, size=32, num_classes=3)
    assert s.source == "fashion-mnist" and "Fashion-MNIST found" in s.note
    assert len(s.classes) == 3 and s.counts == {"train": 6, "valid": 6, "test": 6}


def test_auto_falls_back_to_synthetic(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path / "no-fashion")
    monkeypatch.setattr(datasets, "fashion_mnist_available", lambda directory=None: False)
    s = datasets.prepare("auto", tmp_path / "syn", per_class=2, size=32)
    assert s.source == "synthetic" and "not installed" in s.note


def test_unknown_source_via_cli(tmp_path, capsys):
    assert main(["data", "--source", str(tmp_path / "missing")]) == 1
    assert "unknown source" in capsys.readouterr().err


def test_dest_with_files_byoc_did_not_write_is_never_deleted(tmp_path, capsys):
    """`byoc data --dest` pointing at the user's own folder (no marker) changes nothing."""
    mine = tmp_path / "photos"
    (mine / "2024").mkdir(parents=True)
    (mine / "2024" / "holiday.jpg").write_bytes(b"\xff\xd8precious")
    with pytest.raises(datasets.DatasetError, match="did not write .* nothing was changed"):
        datasets.prepare("synthetic", mine, per_class=1, size=16)
    assert (mine / "2024" / "holiday.jpg").read_bytes() == b"\xff\xd8precious"
    assert sorted(p.name for p in mine.iterdir()) == ["2024"]
    assert main(["data", "--source", "synthetic", "--dest", str(mine)]) == 1
    assert "nothing was changed" in capsys.readouterr().err
    assert (mine / "2024" / "holiday.jpg").exists()


def test_interrupted_build_is_redone_and_an_empty_dest_is_used(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    s = datasets.prepare("synthetic", empty, per_class=1, size=16)
    assert s.counts == {"train": 4, "valid": 4, "test": 4}
    assert (empty / datasets.COMPLETE_MARKER).exists() and not (empty / datasets.BUILDING_MARKER).exists()

    half = tmp_path / "half"

    def crash(*args, **kwargs):
        (half / "train").mkdir()
        raise KeyboardInterrupt
    monkeypatch.setattr(datasets, "make_dataset", crash)
    with pytest.raises(KeyboardInterrupt):
        datasets.prepare("synthetic", half, per_class=1, size=16)
    assert (half / datasets.BUILDING_MARKER).exists()     # ours, unfinished
    monkeypatch.undo()
    assert datasets.prepare("synthetic", half, per_class=1, size=16).counts["train"] == 4


def test_validate_accepts_the_trainers_split_names_and_an_optional_test_split(tmp_path):
    """The split folder names the trainer accepts (container_train.contract.SPLIT_FOLDER_ALIASES) pass
    here too; ``optional=("test",)`` is how byoc train/tune check a folder (the trainer skips no test/)."""
    root = _without(tmp_path / "ds", "test")
    (root / "valid").rename(root / "val")
    assert datasets.validate_imagefolder(root, optional=("test",)).counts == {"train": 2, "valid": 2}
    with pytest.raises(datasets.DatasetError, match="missing test/"):
        datasets.validate_imagefolder(root)
