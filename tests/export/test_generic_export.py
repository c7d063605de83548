"""trt-export knows nothing of coseg: a made-up frame model, registered for the test, exports end to end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from hmr_trt import registry
from hmr_trt.contract import GraphSpec, ModelContract, Recipe, TensorSpec, smpl_body_graph
from hmr_trt.export.models.adapter import ModelAdapter
from hmr_trt.export.models.spin import rot6d_to_rotmat
from hmr_trt.export.pipeline import ExportOptions, run_export
from hmr_trt.manifest import Manifest
from hmr_trt.profile import ShapeProfile

CONTRACT = ModelContract(
    name="toyframe", family="frame", description="one linear layer per crop feature, for this test",
    graphs=(GraphSpec("regress", "model", (TensorSpec("feats", ("batch", 12)),),
                      (TensorSpec("pose_rotmat", ("batch", 24, 3, 3)), TensorSpec("betas", ("batch", 10)),
                       TensorSpec("cam", ("batch", 3)))),
            smpl_body_graph()),
    feature_extractor="none", recipes=(Recipe("fp16", "fp16"),), default_recipe={"fp16": "fp16"})


class ToyFrame(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(12, 144 + 10 + 3)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(157, 12, generator=gen))
            self.head.bias.zero_()

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # (N, 12)
        y = self.head(feats)
        return rot6d_to_rotmat(y[:, :144]).reshape(-1, 24, 3, 3), y[:, 144:154], y[:, 154:]


@dataclass(frozen=True)
class ToyConfig:
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}


class ToyAdapter(ModelAdapter):
    contract = CONTRACT
    Config = ToyConfig

    def reference(self, cfg, checkpoint=None):  # noqa: ANN001, ANN201
        return ToyFrame().eval()

    def example_inputs(self, cfg, graph, batch, seed=0):  # noqa: ANN001, ANN201
        return (torch.randn(batch, 12, generator=torch.Generator().manual_seed(seed)),)


@pytest.fixture
def toy_registered(monkeypatch):
    adapters = {"toyframe": ToyAdapter()}
    monkeypatch.setattr(registry, "names", lambda: ("coseg", "toyframe"))
    real, real_contract = registry.adapter, registry.contract
    monkeypatch.setattr(registry, "adapter", lambda name: adapters.get(name) or real(name))
    monkeypatch.setattr(registry, "contract", lambda name: adapters[name].contract if name in adapters
                        else real_contract(name))


def test_a_frame_model_exports_through_its_contract(toy_registered, tmp_path) -> None:
    opts = ExportOptions(out=tmp_path / "out", model="toyframe", precision="fp16", profile=ShapeProfile(1, 4, 8),
                         with_backbone=False, build_engines=False)
    result = run_export(opts)
    manifest = Manifest.read(tmp_path / "out")
    assert {a.name for a in manifest.artifacts} == {"regress", "body_model"}
    assert manifest.find("regress").path == "toyframe_regress_fp32.onnx"
    assert manifest.find("regress", precision="fp16") is not None
    assert [t.shape for t in manifest.find("regress").outputs] == [["batch", 24, 3, 3], ["batch", 10], ["batch", 3]]
    assert manifest.model_contract().family == "frame" and result.reports[0].passed
    assert manifest.verdict["fp32"]["verdict"] == "PASS" and manifest.verdict["fp16"]["recipe"] == "fp16"


MIDDLE = ModelContract(
    name="toymiddle", family="window", description="a window model that emits only frame T//2, for this test",
    graphs=(GraphSpec("temporal", "model", (TensorSpec("features", ("batch", 4, 12)),),
                      (TensorSpec("pose_rotmat", ("batch", 1, 24, 3, 3)), TensorSpec("betas", ("batch", 1, 10)),
                       TensorSpec("cam", ("batch", 1, 3)))),
            smpl_body_graph()),
    window=4, feature_dim=12, emit="middle", feature_extractor="none")


class ToyMiddle(ToyFrame):
    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # (B, 4, 12)
        pose, betas, cam = super().forward(features.mean(dim=1) + features[:, 2])  # reads the window, centre 2
        return pose[:, None], betas[:, None], cam[:, None]  # (B, 1, ...): T_out = 1


class ToyMiddleAdapter(ToyAdapter):
    contract = MIDDLE

    def reference(self, cfg, checkpoint=None):  # noqa: ANN001, ANN201
        return ToyMiddle().eval()

    def example_inputs(self, cfg, graph, batch, seed=0):  # noqa: ANN001, ANN201
        return (torch.randn(batch, 4, 12, generator=torch.Generator().manual_seed(seed)),)


def test_a_middle_window_model_has_one_frame_per_window(monkeypatch, tmp_path) -> None:
    from hmr_trt.export.pipeline import PARITY_REFERENCE_NAME

    monkeypatch.setattr(registry, "names", lambda: ("toymiddle",))
    monkeypatch.setattr(registry, "adapter", lambda name: ToyMiddleAdapter())
    result = run_export(ExportOptions(out=tmp_path / "out", model="toymiddle", profile=ShapeProfile(1, 4, 8),
                                      with_backbone=False, build_engines=False))
    assert result.reports[0].passed, result.reports[0].failures
    ref = np.load(tmp_path / "out" / PARITY_REFERENCE_NAME)
    assert ref["random/pose_rotmat"].shape == (7, 1, 24, 3, 3) and ref["random/vertices"].shape[:2] == (7, 1)
    assert Manifest.read(tmp_path / "out").model_contract().emit == "middle"
