"""Fast tests of the checks that run before work is done (issue 28, items 7-12, 15, 16), on the real
decoder, the artifact contract's loader and the archive unpacker; the same inputs against the running
server are in test_serve_bombs.py and test_serve_model_checks.py.

The hostile inputs are made here: a progressive JPEG with one scan repeated, a TIFF declaring one
32768x32768 tile, a 7600x1 PNG, weights stored with stride 0 or holding NaN, archives that are long or
poisoned past their first members."""

from __future__ import annotations

import io
import json
import struct
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from byoc_common import artifact
from byoc_common.architectures import build_classifier
from byoc_common.artifact import ModelArtifactError, ModelConfig, load_model_artifact, save_model_artifact
from container_serve import content_types as ct
from container_serve import decoding, jpeg_scans, memory
from container_serve.decoding import DecodeLimits, ImageDecoder
from container_serve.errors import BadRequestError, PayloadTooLargeError
from container_serve.tar_unpack import UnsafeArchiveError, unpack_flat

CONFIG = ModelConfig("resnet18", 3, image_size=32, resize_size=36)
SOS = b"\xff\xda"


# ---- hostile images (shared with test_serve_bombs.py) --------------------------------------------

def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def progressive_jpeg(size: tuple[int, int], repeat_last_scan: int = 0) -> bytes:
    """A progressive JPEG of ``size`` (Pillow: libjpeg's 10-scan script) whose last scan is repeated
    ``repeat_last_scan`` more times before EOI (libjpeg decodes each repeat over the whole image)."""
    data = encoded(Image.new("RGB", size, (120, 30, 200)), "JPEG", progressive=True, quality=90)
    eoi = data.rindex(b"\xff\xd9")
    last_scan = data[data.rindex(SOS):eoi]
    return data[:eoi] + last_scan * repeat_last_scan + data[eoi:]


def huge_tile_tiff() -> bytes:
    """A 64x64 8-bit grey TIFF stored as one 32768x32768 tile (libtiff sizes its buffer by the tile: 1 GiB)."""
    entries = [(256, 4, 64), (257, 4, 64), (258, 3, 8), (259, 3, 1), (262, 3, 1), (277, 3, 1),
               (322, 4, 32768), (323, 4, 32768), (324, 4, 8 + 2 + 12 * 10 + 4), (325, 4, 64)]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        ifd += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3
                                                     else struct.pack("<I", value))
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\x00" * 64


@pytest.fixture
def decoder():
    return ImageDecoder(CONFIG, DecodeLimits(max_image_pixels=4_000_000, max_images=4))


# ---- JPEG scans ----------------------------------------------------------------------------------

def test_scans_are_counted_as_libjpeg_reads_them():
    assert jpeg_scans.count_scans(encoded(Image.new("RGB", (64, 48)), "JPEG"), 100) == 1
    assert jpeg_scans.count_scans(progressive_jpeg((64, 48)), 100) == 10       # libjpeg's colour script
    assert jpeg_scans.count_scans(encoded(Image.new("L", (64, 48)), "JPEG", progressive=True), 100) == 6
    assert jpeg_scans.count_scans(progressive_jpeg((64, 48), repeat_last_scan=600), 10_000) == 610
    assert jpeg_scans.count_scans(progressive_jpeg((64, 48), repeat_last_scan=600), 20) == 21  # stops early
    # A thumbnail inside an APP1 segment (its own SOS marker) is skipped with the segment, as libjpeg does.
    app1 = b"Exif\x00\x00" + progressive_jpeg((16, 16))
    photo = encoded(Image.new("RGB", (64, 48)), "JPEG")
    with_thumbnail = photo[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + photo[2:]
    assert with_thumbnail.count(SOS) == 11 and jpeg_scans.count_scans(with_thumbnail, 100) == 1
    assert Image.open(io.BytesIO(with_thumbnail)).size == (64, 48)


def test_a_jpeg_with_repeated_scans_is_refused_before_decoding(decoder):
    (x,) = decoder.decode(progressive_jpeg((2000, 2000)), ct.JPEG)  # 4 MP at the limit, its 10 scans: fine
    assert x.shape == (3, 32, 32)
    with pytest.raises(PayloadTooLargeError, match="more than 16 scans"):
        decoder.decode(progressive_jpeg((2000, 2000), repeat_last_scan=7), ct.JPEG)
    # A smaller image may have more scans (the work is scans x pixels), up to MAX_JPEG_SCANS.
    assert decoder.decode(progressive_jpeg((500, 500), repeat_last_scan=40), ct.JPEG)[0].shape == (3, 32, 32)
    with pytest.raises(PayloadTooLargeError, match=f"more than {decoding.MAX_JPEG_SCANS} scans"):
        decoder.decode(progressive_jpeg((48, 40), repeat_last_scan=decoding.MAX_JPEG_SCANS), ct.JPEG)


# ---- formats and shapes --------------------------------------------------------------------------

def test_tiff_is_not_decoded(decoder):
    tiff = huge_tile_tiff()
    probe = Image.open(io.BytesIO(tiff))  # Pillow unrestricted reads it as what it claims to be
    assert (probe.format, probe.size, probe.tag_v2[322], probe.tag_v2[323]) == ("TIFF", (64, 64), 32768, 32768)
    with pytest.raises(BadRequestError, match=r"supported formats: JPEG, PNG, BMP, GIF, WEBP\)$"):
        decoder.decode(tiff, ct.X_IMAGE)
    with pytest.raises(BadRequestError):
        decoder.decode(encoded(Image.new("RGB", (8, 8)), "TIFF"), ct.OCTET_STREAM)  # a plain one neither


@pytest.mark.parametrize("size", [(7600, 1), (1, 7600), (2100, 100)])
def test_stretched_images_are_refused_before_resizing(decoder, size):
    with pytest.raises(PayloadTooLargeError, match="more than 20 times as long"):
        decoder.decode(encoded(Image.new("RGB", size), "PNG"), ct.PNG)


def test_stretched_arrays_are_refused_too(decoder):
    buf = io.BytesIO()
    np.save(buf, np.zeros((1, 7600, 3), np.uint8))
    with pytest.raises(PayloadTooLargeError, match="more than 20 times as long"):
        decoder.decode(buf.getvalue(), ct.NPY)


def test_a_panorama_within_the_ratio_is_served(decoder):
    assert decoder.decode(encoded(Image.new("RGB", (2000, 100)), "PNG"), ct.PNG)[0].shape == (3, 32, 32)


# ---- the model config and weights ----------------------------------------------------------------

def _config(**changes) -> dict:
    return {**CONFIG.to_json(), **changes}


@pytest.mark.parametrize("changes,named", [
    ({"image_size": 6000, "resize_size": 6858}, "image_size 6000"),
    ({"image_size": 8}, "image_size 8"),
    ({"resize_size": 4096}, "resize_size 4096"),
    ({"resize_size": 16}, "resize_size 16"),      # smaller than the crop (the trainer refuses it too)
    ({"num_classes": 600_000}, "num_classes 600000"),
    ({"num_classes": 0}, "num_classes 0"),
    ({"image_size": 1e400}, "invalid"),            # json's Infinity
    ({"std": [0.2, 0.0, 0.2]}, "std must be positive"),
    ({"mean": [0.5, float("nan"), 0.5]}, "mean must be 3 finite"),
    ({"mean": [0.5]}, "mean must be 3 finite"),
])
def test_config_figures_are_bounded_where_they_are_read(changes, named):
    with pytest.raises(ModelArtifactError, match=named):
        ModelConfig.from_json(_config(**changes))
    edge = ModelConfig.from_json(_config(image_size=artifact.MAX_IMAGE_SIZE, resize_size=artifact.MAX_RESIZE_SIZE,
                                         num_classes=artifact.MAX_NUM_CLASSES))
    assert edge.image_size == artifact.MAX_IMAGE_SIZE


def test_metadata_files_are_bounded_before_they_are_read(model_dir, tmp_path, monkeypatch):
    limit = (model_dir / artifact.CONFIG_FILE).stat().st_size  # the config fits, the classes do not
    monkeypatch.setattr(artifact, "MAX_METADATA_BYTES", limit)
    (tmp_path / "m").mkdir()
    for name in artifact.ARTIFACT_FILES:
        (tmp_path / "m" / name).write_bytes((model_dir / name).read_bytes())
    (tmp_path / "m" / artifact.CLASSES_FILE).write_text(json.dumps(["x" * 200] * 3))
    with pytest.raises(ModelArtifactError, match=f"classes.json is .* bytes; the limit is {limit}"):
        artifact.read_model_metadata(tmp_path / "m")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    return save_model_artifact(tmp_path_factory.mktemp("checks") / "model", build_classifier("resnet18", 3),
                               ["a", "b", "c"], CONFIG)


def _with_state(model_dir, tmp_path, edit) -> object:
    state = torch.load(model_dir / artifact.WEIGHTS_FILE, weights_only=True)
    edit(state)
    out = tmp_path / "edited"
    out.mkdir()
    for name in (artifact.CLASSES_FILE, artifact.CONFIG_FILE):
        (out / name).write_bytes((model_dir / name).read_bytes())
    torch.save(state, out / artifact.WEIGHTS_FILE)
    return out


@pytest.mark.parametrize("edit,named", [
    (lambda s: s.__setitem__("fc.weight", torch.zeros(512).expand(3, 512)), "not stored densely"),
    (lambda s: s.__setitem__("fc.weight", torch.zeros(3, 1024)[:, ::2]), "not stored densely"),  # gaps
    (lambda s: s["fc.weight"].__setitem__((0, 0), float("nan")), "fc.weight holds NaN"),
    (lambda s: s["bn1.running_var"].fill_(float("inf")), "bn1.running_var holds NaN or infinite"),
    (lambda s: s.__setitem__("fc.weight", s["fc.weight"].double()), "torch.float64"),
    (lambda s: s.__setitem__("fc.weight", torch.zeros(4, 512)), r"expects torch.float32 \(3, 512\)"),
])
def test_weights_the_network_would_not_hold_are_refused(model_dir, tmp_path, edit, named):
    with pytest.raises(ModelArtifactError, match=named):
        load_model_artifact(_with_state(model_dir, tmp_path, edit))


def test_channels_last_weights_are_dense_and_load(model_dir, tmp_path):
    """What a bf16 + channels-last training job saves (container_train/precision.py) must still load."""
    def channels_last(state):
        for name, t in state.items():
            if t.dim() == 4:
                state[name] = t.contiguous(memory_format=torch.channels_last)

    edited = _with_state(model_dir, tmp_path, channels_last)
    assert not torch.load(edited / artifact.WEIGHTS_FILE, weights_only=True)["conv1.weight"].is_contiguous()
    net, _, _ = load_model_artifact(edited)
    reference, _, _ = load_model_artifact(model_dir)
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(net(x), reference(x), atol=1e-5)


def test_the_load_estimate_counts_elements_and_the_warm_up():
    wide = ModelConfig("resnet18", 50_000, image_size=32, resize_size=36)
    assert artifact.network_bytes(wide) - artifact.network_bytes(CONFIG) == 4 * (512 + 1) * (50_000 - 3)
    assert artifact.network_bytes(CONFIG) == sum(t.numel() * t.element_size() for t in
                                                 build_classifier("resnet18", 3).state_dict().values())
    small, large = memory.load_needs(10 * memory.MIB, 32), memory.load_needs(10 * memory.MIB, 1024)
    assert large - small == memory.WARMUP_BYTES_PER_INPUT_PIXEL * (1024 ** 2 - 32 ** 2)


# ---- archives ------------------------------------------------------------------------------------

def _dir_entry(name: str) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info.tobuf(format=tarfile.GNU_FORMAT)


def test_members_are_checked_while_reading_with_a_cap(tmp_path):
    """Five folder entries, then a GNU long-name header followed by garbage: tarfile raises ReadError when
    it reaches that header (getmembers() does), so only a check that stops at the cap passes this."""
    poison = tarfile.TarInfo("x" * 200).tobuf(format=tarfile.GNU_FORMAT)[:1024] + b"\x07" * 512
    archive = tmp_path / "long.tar"
    archive.write_bytes(b"".join(_dir_entry("./") for _ in range(5)) + poison + b"\x00" * 1024)
    with tarfile.open(archive) as tar, pytest.raises(tarfile.ReadError):
        tar.getmembers()
    with pytest.raises(UnsafeArchiveError, match="more than 4 members"):
        unpack_flat(archive, tmp_path / "out", artifact.ARTIFACT_FILES, 1 << 20)
    assert not (tmp_path / "out").exists()


def _tar(path, members: list[tuple[str, bytes]]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_duplicates_sizes_and_a_used_destination_are_refused(tmp_path):
    twice = _tar(tmp_path / "twice.tar.gz", [("model.pth", b"a"), ("./model.pth", b"b")])
    with pytest.raises(UnsafeArchiveError, match="'model.pth' twice"):
        unpack_flat(twice, tmp_path / "a", artifact.ARTIFACT_FILES, 1 << 20)
    big = _tar(tmp_path / "big.tar.gz", [("model.pth", b"a" * 600), ("classes.json", b"b" * 600)])
    (tmp_path / "b").mkdir()
    with pytest.raises(UnsafeArchiveError, match="more than 1000 bytes"):
        unpack_flat(big, tmp_path / "b", artifact.ARTIFACT_FILES, 1000)
    assert list((tmp_path / "b").iterdir()) == []  # what it wrote is gone; the folder it was given stays
    with pytest.raises(FileExistsError):
        unpack_flat(big, tmp_path, artifact.ARTIFACT_FILES, 1 << 20)
    assert unpack_flat(big, tmp_path / "c", artifact.ARTIFACT_FILES, 1200) == ["model.pth", "classes.json"]
    assert (tmp_path / "c" / "classes.json").read_bytes() == b"b" * 600
    assert (tmp_path / "c" / "model.pth").stat().st_mode & 0o777 == 0o644
