"""Tests of the ResNet-50 backbone: torchvision key layout, seeded weights, checkpoint loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hmr_trt.errors import CheckpointError
from hmr_trt.export.backbone import (
    ResNet50Backbone,
    backbone_from_checkpoint,
    load_backbone_state_dict,
    smooth_images,
)


@pytest.fixture(scope="module")
def seed0() -> ResNet50Backbone:
    return ResNet50Backbone.from_seed(0)


@pytest.fixture(scope="module")
def seed0_state(seed0: ResNet50Backbone) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in seed0.state_dict().items()}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return smooth_images(2, 64, 64, seed=11)  # (2, 3, 64, 64)


def _features(model: ResNet50Backbone, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(images)


def _fresh() -> ResNet50Backbone:
    return ResNet50Backbone(seed=1, calibrate=False)


def test_state_dict_matches_torchvision_resnet50_without_fc(seed0_state: dict[str, torch.Tensor]) -> None:
    assert len(seed0_state) == 318
    assert (
        sum(v.numel() for k, v in seed0_state.items() if "running_" not in k and "num_batches" not in k)
        == 23_508_032
    )
    assert not any(k.startswith("fc.") for k in seed0_state)
    for key in (
        "conv1.weight",
        "bn1.num_batches_tracked",
        "layer4.2.bn3.running_var",
        "layer3.5.conv2.weight",
    ):
        assert key in seed0_state
    assert seed0_state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert seed0_state["layer4.0.downsample.1.running_mean"].shape == (2048,)
    assert seed0_state["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert "layer1.1.downsample.0.weight" not in seed0_state


def test_parameter_count_and_v15_strides(seed0: ResNet50Backbone) -> None:
    assert sum(p.numel() for p in seed0.parameters()) == 23_508_032
    first = seed0.layer2[0]
    assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)  # v1.5: stride on the 3x3


def test_seeded_init_is_deterministic_and_leaves_global_rng(seed0_state: dict[str, torch.Tensor]) -> None:
    rng_before = torch.get_rng_state()
    again = ResNet50Backbone.from_seed(0).state_dict()
    other = ResNet50Backbone(seed=1, calibrate=False).state_dict()
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert all(torch.equal(again[k], v) for k, v in seed0_state.items())
    assert not torch.equal(other["conv1.weight"], seed0_state["conv1.weight"])
    assert not torch.equal(other["layer4.2.conv3.weight"], seed0_state["layer4.2.conv3.weight"])


def _check_sane(features: torch.Tensor, batch: int) -> None:
    assert features.shape == (batch, 2048) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    assert (features >= 0).all()
    assert 0.1 < features.mean().item() < 10 and features.max().item() < 100
    spread = features.std(dim=0) / features.mean(dim=0).clamp_min(1e-6)  # (2048,) per-feature relative std
    assert spread.median().item() > 0.05
    for i in range(batch):
        for j in range(i + 1, batch):
            assert (features[i] - features[j]).abs().mean().item() > 0.01


def test_seeded_features_are_well_scaled(seed0: ResNet50Backbone) -> None:
    _check_sane(_features(seed0, smooth_images(4, 96, 96, seed=5)), 4)


def test_seeded_features_are_well_scaled_at_224(seed0: ResNet50Backbone) -> None:
    _check_sane(_features(seed0, smooth_images(3, 224, 224, seed=6)), 3)


def test_round_trip_through_file(
    tmp_path: Path, seed0: ResNet50Backbone, seed0_state: dict[str, torch.Tensor], images: torch.Tensor
) -> None:
    path = tmp_path / "backbone.pt"
    torch.save(seed0_state, path)
    loaded = backbone_from_checkpoint(path)
    assert not loaded.training
    assert torch.equal(_features(loaded, images), _features(seed0, images))

    other = _fresh().eval()
    assert not torch.equal(_features(other, images), _features(seed0, images))
    assert load_backbone_state_dict(other, torch.load(path, weights_only=True)) == []
    assert torch.equal(_features(other, images), _features(seed0, images))


def test_torchvision_state_dict_drops_fc(seed0_state: dict[str, torch.Tensor]) -> None:
    state = dict(seed0_state, **{"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    model = _fresh()
    assert load_backbone_state_dict(model, state) == ["fc.bias", "fc.weight"]
    assert torch.equal(model.state_dict()["layer3.5.conv2.weight"], seed0_state["layer3.5.conv2.weight"])


def test_old_torchvision_file_without_num_batches_tracked_loads(seed0_state: dict[str, torch.Tensor]) -> None:
    state = {k: v for k, v in seed0_state.items() if not k.endswith("num_batches_tracked")}
    model = _fresh()
    assert load_backbone_state_dict(model, state) == []
    assert torch.equal(
        model.state_dict()["layer4.2.bn3.running_var"], seed0_state["layer4.2.bn3.running_var"]
    )


def _spin_checkpoint(state: dict[str, torch.Tensor], prefix: str) -> dict[str, object]:
    regressor = {
        "fc1.weight": torch.zeros(1024, 2048 + 144 + 10 + 3),
        "fc1.bias": torch.zeros(1024),
        "fc2.weight": torch.zeros(1024, 1024),
        "fc2.bias": torch.zeros(1024),
        "decpose.weight": torch.zeros(144, 1024),
        "decpose.bias": torch.zeros(144),
        "decshape.weight": torch.zeros(10, 1024),
        "decshape.bias": torch.zeros(10),
        "deccam.weight": torch.zeros(3, 1024),
        "deccam.bias": torch.zeros(3),
        "init_pose": torch.zeros(1, 144),
        "init_shape": torch.zeros(1, 10),
        "init_cam": torch.zeros(1, 3),
    }
    model_state = {prefix + k: v for k, v in {**state, **regressor}.items()}
    return {"model": model_state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 3}


@pytest.mark.parametrize("prefix", ["", "module.", "model.", "backbone.", "module.backbone."])
def test_spin_checkpoint_loads_and_ignores_regressor(
    prefix: str, seed0: ResNet50Backbone, seed0_state: dict[str, torch.Tensor], images: torch.Tensor
) -> None:
    model = _fresh()
    ignored = load_backbone_state_dict(model, _spin_checkpoint(seed0_state, prefix))
    assert len(ignored) == 13
    assert prefix + "decpose.weight" in ignored and prefix + "init_cam" in ignored
    if prefix == "module.":
        assert torch.equal(_features(model, images), _features(seed0, images))


def test_spin_checkpoint_file_loads(
    tmp_path: Path, seed0: ResNet50Backbone, seed0_state: dict[str, torch.Tensor], images: torch.Tensor
) -> None:
    path = tmp_path / "model_checkpoint.pt"
    torch.save(_spin_checkpoint(seed0_state, "module."), path)
    assert torch.equal(_features(backbone_from_checkpoint(path), images), _features(seed0, images))


def test_missing_key_raises(seed0_state: dict[str, torch.Tensor]) -> None:
    state = dict(seed0_state)
    del state["layer3.5.conv2.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing backbone keys: layer3\.5\.conv2\.weight"):
        load_backbone_state_dict(_fresh(), state)


def test_many_missing_keys_are_summarised(seed0_state: dict[str, torch.Tensor]) -> None:
    state = {"head." + k: v for k, v in seed0_state.items()}  # wrong prefix: nothing matches
    with pytest.raises(
        CheckpointError, match=r"missing backbone keys: conv1\.weight.*\.\.\. and \d+ more"
    ) as err:
        load_backbone_state_dict(_fresh(), state)
    assert "unexpected keys ignored: head.conv1.weight" in str(err.value)
    assert "\n" not in str(err.value)


def test_shape_mismatch_raises(seed0_state: dict[str, torch.Tensor]) -> None:
    state = dict(seed0_state, **{"layer1.0.downsample.0.weight": torch.zeros(256, 64, 3, 3)})
    with pytest.raises(
        CheckpointError,
        match=r"layer1\.0\.downsample\.0\.weight \(shape \(256, 64, 3, 3\), expected \(256, 64, 1, 1\)\)",
    ):
        load_backbone_state_dict(_fresh(), state)


def test_non_mapping_raises() -> None:
    with pytest.raises(CheckpointError, match="expected a dict of tensors"):
        load_backbone_state_dict(_fresh(), [torch.zeros(1)])  # type: ignore[arg-type]


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found") as err:
        backbone_from_checkpoint(tmp_path / "nope.pt")
    assert "\n" not in str(err.value)


def test_corrupt_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"\x00\xffnot a checkpoint\x13\x37" * 64)
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as err:
        backbone_from_checkpoint(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
