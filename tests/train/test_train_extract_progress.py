"""Feature extraction says where it stands, in the job log, with images/s and an ETA (issue 25: a
tuning trial used to extract for 9 minutes without a line), and the operator side reads that line."""

from __future__ import annotations

from torch import nn
from torchvision import transforms

from byoc.datasets.synthetic import make_dataset
from container_train import contract, feature_extraction
from container_train.data import ImageFolderDataset, scan_split


def test_extraction_logs_progress_the_operator_side_parses(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds", num_classes=2, per_class=5, size=16)
    (root / "train" / "001.Class_a" / "broken.jpg").write_bytes(b"not a jpeg")   # skipped, still counted
    dataset = ImageFolderDataset(scan_split("train", root / "train"), transforms.ToTensor())
    monkeypatch.setattr(feature_extraction, "EXTRACT_PROGRESS_INTERVAL_S", 0.0)    # a line per batch
    lines: list[str] = []
    extractor = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    feature_extraction.compute_features(extractor, dataset, passes=2, batch_size=4, log=lines.append)

    progress = [contract.extract_progress(line) for line in lines if line.startswith("[extract]")]
    assert len(progress) >= 6                          # 3 batches a view, 2 views, plus one per view's end
    done, total, rate, eta = progress[-1]
    assert (done, total) == (2 * len(dataset), 2 * len(dataset)) and rate > 0 and eta == "0:00:00"
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)
    assert contract.extract_progress("\n".join(["noise", *lines, "epoch 1/2 ..."])) == progress[-1]
