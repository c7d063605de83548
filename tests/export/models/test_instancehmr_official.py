"""hmr-trt's instance-aware reference against the OFFICIAL code's outputs (fixture written by
tools/instancehmr_official_parity.py from a seeded checkpoint in the released format)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from hmr_trt.export.models.instancehmr.checkpoint import write_released
from hmr_trt.export.models.instancehmr.config import InstanceHMRConfig
from hmr_trt.export.models.instancehmr.model import InstanceHMR
from hmr_trt.export.models.instancehmr.postprocess import postprocess, smpl_from_params
from hmr_trt.registry import adapter

ROOT = Path(__file__).resolve().parents[3]
FIXTURE = ROOT / "tests" / "fixtures" / "instancehmr_official.npz"


def _tool():
    spec = importlib.util.spec_from_file_location("instancehmr_official_parity",
                                                  ROOT / "tools" / "instancehmr_official_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_and_post_processing_match_the_official_code(tmp_path) -> None:
    if not FIXTURE.is_file():
        pytest.skip(f"{FIXTURE} missing: run tools/instancehmr_official_parity.py")
    tool, fx = _tool(), np.load(FIXTURE)
    assert int(fx["state_seed"]) == tool.STATE_SEED and int(fx["image_seed"]) == tool.IMAGE_SEED
    cfg = InstanceHMRConfig()
    state = tool.seeded_state(InstanceHMR(cfg, seeded=False))
    path = write_released(tmp_path / "seeded.pkl", state, smpl={"params_map_parser.smpl_model.v_template":
                                                                torch.zeros(6890, 3)})
    model = adapter("instancehmr").reference(cfg, path)  # through the released-checkpoint loader
    with torch.no_grad():
        center, cam, params = model(tool.images())
        people = postprocess(center, cam, params, conf_thresh=0.2)
    px = tool.pixels(int(fx["pixel_seed"]), fx["center_at_pixels"].shape[-1])
    full = torch.cat((torch.pow(1.1, cam[:, :1]), cam[:, 1:], params), 1)  # official: scale applied in the head
    assert np.abs(center.flatten(2)[:, :, px].numpy() - fx["center_at_pixels"]).max() < 1e-5
    assert np.abs(full.flatten(2)[:, :, px].numpy() - fx["params_maps_at_pixels"]).max() < 1e-5
    assert len(fx["scores"]) >= 5  # the fixture holds people
    assert people["batch_ids"].tolist() == fx["batch_ids"].tolist()
    flat = (people["centers_yx"][:, 0] * center.shape[-1] + people["centers_yx"][:, 1]).tolist()
    assert flat == fx["flat_inds"].tolist()
    assert np.abs(people["scores"].numpy() - fx["scores"]).max() < 1e-5
    official = torch.from_numpy(fx["params_pred"])  # (N, 82): camera (scale applied), then the 79 parameters
    assert np.abs(people["cam"].numpy() - fx["params_pred"][:, :3]).max() < 1e-5
    expect = smpl_from_params(official[:, 3:], 79)
    assert (people["pose_rotmat"] - expect["pose_rotmat"]).abs().max() < 1e-5
    assert (people["betas"] - expect["betas"]).abs().max() < 1e-5
