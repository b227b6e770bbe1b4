import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from byoc.datasets import fashion_mnist
from tests.helpers import required


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_source(tmp_path):
    """A miniature Fashion-MNIST in the real file format: image value = 20 * label."""
    rng = np.random.default_rng(0)
    for part, n in (("train", 60), ("t10k", 30)):
        labels = np.arange(n) % 3
        images = np.repeat((labels * 20)[:, None, None], 28, axis=1).repeat(28, axis=2)
        images = images + rng.integers(0, 3, images.shape)
        _write_idx(tmp_path / f"{part}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{part}-labels-idx1-ubyte.gz", labels)
    return tmp_path


def test_export_writes_the_dogimages_layout_without_overlap(fake_source, tmp_path):
    dest = fashion_mnist.export_imagefolder(tmp_path / "out", classes=["Trouser", 0],
                                            per_class={"train": 5, "valid": 3, "test": 2}, size=40,
                                            source_dir=fake_source)
    assert sorted(p.name for p in (dest / "train").iterdir()) == ["001.Trouser", "002.T-shirt_top"]
    for split, n in (("train", 5), ("valid", 3), ("test", 2)):
        files = sorted((dest / split / "001.Trouser").glob("*.jpg"))
        assert len(files) == n
        img = Image.open(files[0])
        assert img.mode == "RGB" and img.size == (40, 40)
        assert abs(np.asarray(img).mean() - 20) < 6        # label 1 -> value 20: the right class


def test_asking_for_too_many_images_or_unknown_class_is_an_error(fake_source, tmp_path):
    with pytest.raises(fashion_mnist.FashionMnistError, match="only 20 exist"):
        fashion_mnist.export_imagefolder(tmp_path / "a", classes=[0], per_class=15, source_dir=fake_source)
    with pytest.raises(fashion_mnist.FashionMnistError, match="unknown Fashion-MNIST class 'Hat'"):
        fashion_mnist.export_imagefolder(tmp_path / "b", classes=["Hat"], source_dir=fake_source)


def test_reads_the_installed_dataset():
    if not (fashion_mnist.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file():
        required.missing("Debian package dataset-fashion-mnist is not installed (make setup)")
    x, y = fashion_mnist.load(part="t10k")
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)
    assert np.bincount(y).tolist() == [1000] * 10
