"""hmr-trt's instance-aware reference against the OFFICIAL code's outputs (fixtures written by
tools/instancehmr_official_parity.py from a seeded checkpoint in the released format): the well-conditioned
random state, and the sensitive one (``--gain 1.35``: maps that float32 round-off moves), where the two agree
within FLOOR_MULTIPLE x the float32 floor of hmr-trt's reference (export/parity.py's rule)."""

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
FIXTURES = ["instancehmr_official.npz", "instancehmr_official_sensitive.npz"]


def _tool():
    spec = importlib.util.spec_from_file_location("instancehmr_official_parity",
                                                  ROOT / "tools" / "instancehmr_official_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fixture", FIXTURES)
def test_reference_and_post_processing_match_the_official_code(fixture, tmp_path) -> None:
    from hmr_trt.export.parity import FLOOR_MULTIPLE, FLOOR_REL

    path = ROOT / "tests" / "fixtures" / fixture
    if not path.is_file():
        pytest.skip(f"{path} missing: run tools/instancehmr_official_parity.py")
    tool, fx = _tool(), np.load(path)
    assert int(fx["state_seed"]) == tool.STATE_SEED and int(fx["image_seed"]) == tool.IMAGE_SEED
    gain = float(fx["gain"]) if "gain" in fx else 1.0
    cfg = InstanceHMRConfig()
    state = tool.seeded_state(InstanceHMR(cfg, seeded=False), gain)
    path = write_released(tmp_path / "seeded.pkl", state, smpl={"params_map_parser.smpl_model.v_template":
                                                                torch.zeros(6890, 3)})
    model = adapter("instancehmr").reference(cfg, path)  # through the released-checkpoint loader
    x = tool.images()
    sign = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        center, cam, params = model(x)
        people = postprocess(center, cam, params, conf_thresh=0.2)
        moved = model((x.double() * (1 + FLOOR_REL * sign)).float())  # the float32 floor: inputs moved an ulp
    px = tool.pixels(int(fx["pixel_seed"]), fx["center_at_pixels"].shape[-1])
    full = torch.cat((torch.pow(1.1, cam[:, :1]), cam[:, 1:], params), 1)  # official: scale applied in the head
    floor_center = float((moved[0] - center).abs().max())
    floor_maps = max(float((moved[1] - cam).abs().max()), float((moved[2] - params).abs().max()))
    tol_center, tol_maps = max(1e-5, FLOOR_MULTIPLE * floor_center), max(1e-5, FLOOR_MULTIPLE * floor_maps)
    if gain != 1.0:  # the sensitive state: round-off moves the maps more than 1e-5, and it is measured here
        assert float(fx["params_map_conditioning"]) > 1e-3 and tol_center > 1e-5 and tol_maps > 1e-5
    assert np.abs(center.flatten(2)[:, :, px].numpy() - fx["center_at_pixels"]).max() < tol_center
    scaled = full.flatten(2)[:, :, px].numpy()
    assert np.abs(scaled[:, 3:] - fx["params_maps_at_pixels"][:, 3:]).max() < tol_maps
    # the camera scale 1.1 ** x multiplies the raw map's error by its value
    assert np.abs(scaled[:, :1] - fx["params_maps_at_pixels"][:, :1]).max() < tol_maps * max(1.0, float(scaled[:, :1].max()))
    assert np.abs(scaled[:, 1:3] - fx["params_maps_at_pixels"][:, 1:3]).max() < tol_maps
    assert len(fx["scores"]) >= 5  # the fixture holds people
    assert people["batch_ids"].tolist() == fx["batch_ids"].tolist()
    flat = (people["centers_yx"][:, 0] * center.shape[-1] + people["centers_yx"][:, 1]).tolist()
    assert flat == fx["flat_inds"].tolist()
    assert np.abs(people["scores"].numpy() - fx["scores"]).max() < tol_center
    official = torch.from_numpy(fx["params_pred"])  # (N, 82): camera (scale applied), then the 79 parameters
    cam_scale = max(1.0, float(people["cam"][:, 0].max()))
    assert np.abs(people["cam"].numpy() - fx["params_pred"][:, :3]).max() < tol_maps * cam_scale
    expect = smpl_from_params(official[:, 3:], 79)
    assert (people["pose_rotmat"] - expect["pose_rotmat"]).abs().max() < tol_maps
    assert (people["betas"] - expect["betas"]).abs().max() < tol_maps
