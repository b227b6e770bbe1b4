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


def test_channels_last_extraction_gives_the_nchw_features_and_leaves_the_model_as_it_came(tmp_path):
    """The CPU extraction runs the backbone channels-last (EXTRACTION_MEMORY_FORMAT); the features are the
    plain NCHW forward pass's up to float32 summation order, and the model's weights go back to the
    contiguous layout the trainer saves."""
    import torch

    from byoc_common.architectures import build_classifier, split_backbone_head

    root = make_dataset(tmp_path / "ds", num_classes=2, per_class=3, size=64)
    dataset = ImageFolderDataset(scan_split("train", root / "train"), transforms.ToTensor())
    torch.manual_seed(0)
    model = build_classifier("efficientnet_lite0", 2)
    extractor, _ = split_backbone_head(model, "efficientnet_lite0")
    assert feature_extraction.EXTRACTION_MEMORY_FORMAT["cpu"] == torch.channels_last
    fs = feature_extraction.compute_features(extractor, dataset, batch_size=4, log=None)

    with torch.inference_mode():
        images = torch.stack([dataset[i][0][0] for i in range(len(dataset))])
        reference = extractor.eval()(images).flatten(1)
    torch.testing.assert_close(fs.features[0], reference, rtol=1e-4, atol=1e-4)
    assert all(p.is_contiguous() for p in model.parameters())


def test_bf16_extraction_is_close_to_float32_and_keyed_apart(tmp_path):
    """With autocast_dtype=bfloat16 the features are the float32 ones to bf16's precision, and the spec
    (so the cache key and a features channel's fingerprint) names the dtype: the two never mix."""
    import torch

    from byoc_common.architectures import build_classifier, split_backbone_head
    from byoc_common.artifact import ModelConfig
    from container_train.feature_cache import split_specs

    root = make_dataset(tmp_path / "ds", num_classes=2, per_class=3, size=64)
    dataset = ImageFolderDataset(scan_split("train", root / "train"), transforms.ToTensor())
    torch.manual_seed(0)
    model = build_classifier("efficientnet_lite0", 2)
    extractor, _ = split_backbone_head(model, "efficientnet_lite0")
    fp32 = feature_extraction.compute_features(extractor, dataset, batch_size=4, log=None).features[0]
    bf16 = feature_extraction.compute_features(extractor, dataset, batch_size=4, log=None,
                                               autocast_dtype=torch.bfloat16).features[0]
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    cosine = torch.nn.functional.cosine_similarity(bf16, fp32, dim=1)
    assert cosine.min() > 0.99, cosine

    config = ModelConfig("efficientnet_lite0", 2, 64, 64)
    plain = split_specs(model, "efficientnet_lite0", config, ["train"])["train"][0]
    low = split_specs(model, "efficientnet_lite0", config, ["train"], autocast_dtype=torch.bfloat16)["train"][0]
    assert (plain.autocast, low.autocast) == ("none", "bfloat16") and plain.key("train", "x") != low.key("train", "x")
