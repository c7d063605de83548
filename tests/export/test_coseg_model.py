"""The reference model: shapes, determinism, moving outputs, batch invariance, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hmr_trt.errors import CheckpointError, ConfigError
from hmr_trt.export.models.coseg.config import TINY, CosegConfig
from hmr_trt.export.models.coseg.model import build_model, load_checkpoint
from hmr_trt.export.models.spin import rot6d_to_rotmat


def test_output_shapes_for_several_windows() -> None:
    for t in (4, 8, 16):
        model = build_model(TINY.with_(window=t))
        rot, betas, cam = model(torch.randn(3, t, TINY.feature_dim))
        assert rot.shape == (3, t, 24, 3, 3) and betas.shape == (3, t, 10) and cam.shape == (3, t, 3)


@pytest.mark.parametrize("bad", [{"window": 15}, {"window": 2}, {"feature_dim": 63}, {"fde_mode": "dft"},
                                 {"fde_cutoff": 99}])
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ConfigError):
        CosegConfig(**bad)


def test_rotations_are_orthonormal() -> None:
    rot = rot6d_to_rotmat(torch.randn(50, 144)).double()
    eye = torch.eye(3, dtype=torch.float64).expand_as(rot)
    assert torch.allclose(rot.transpose(-1, -2) @ rot, eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(rot.shape[0], dtype=torch.float64), atol=1e-5)


def test_identity_6d_gives_identity() -> None:
    six = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    assert torch.allclose(rot6d_to_rotmat(six)[0], torch.eye(3))


def test_seeded_and_deterministic() -> None:
    a, b, c = build_model(TINY), build_model(TINY), build_model(TINY.with_(seed=1))
    x = torch.randn(2, 16, TINY.feature_dim)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.allclose(a(x)[1], c(x)[1])


def test_outputs_move_with_input() -> None:
    """SPIN's 0.01 head gain returns (nearly) the mean pose; the default gain must not."""
    x = torch.randn(8, 16, TINY.feature_dim, generator=torch.Generator().manual_seed(0))
    moving = build_model(TINY)(x)[0].std(dim=0).mean().item()
    spin_like = build_model(TINY.with_(head_gain=0.01, trained_like=False))(x)[0].std(dim=0).mean().item()
    assert moving > 5 * spin_like  # the full model's spread in mm is checked by tests/export/test_export.py


def test_batch_invariance_torch() -> None:
    model = build_model(TINY)
    x = torch.randn(5, 16, TINY.feature_dim)
    together = model(x)
    for i in range(5):
        alone = model(x[i:i + 1])
        for a, b in zip(together, alone):
            assert torch.allclose(a[i:i + 1], b, atol=1e-5)


def test_checkpoint_round_trip(tmp_path) -> None:
    model = build_model(TINY.with_(seed=3))
    torch.save(model.state_dict(), tmp_path / "ckpt.pt")
    loaded = build_model(TINY, checkpoint=tmp_path / "ckpt.pt")
    x = torch.randn(1, 16, TINY.feature_dim)
    assert torch.equal(model(x)[0], loaded(x)[0])


def test_spin_regressor_keys_load(tmp_path) -> None:
    """A SPIN checkpoint ({'model': {...}} with top-level fc1/decpose/init_pose and backbone keys)."""
    donor = build_model(TINY.with_(seed=5))
    spin = {k[len("regressor."):]: v for k, v in donor.state_dict().items() if k.startswith("regressor.")}
    spin["conv1.weight"] = torch.zeros(64, 3, 7, 7)  # a backbone key the temporal model ignores
    torch.save({"model": spin}, tmp_path / "spin.pt")
    model = build_model(TINY)
    load_checkpoint(model, tmp_path / "spin.pt", regressor_only=True)
    assert torch.equal(model.regressor.decpose.weight, donor.regressor.decpose.weight)
    assert not torch.equal(model.stage1.te_f.gru.weight_ih_l0, donor.stage1.te_f.gru.weight_ih_l0)


def test_mismatching_checkpoint_lists_keys(tmp_path) -> None:
    state = build_model(TINY).state_dict()
    state.pop("regressor.fc1.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): regressor.fc1.weight.*unexpected keys \(1\): extra"):
        build_model(TINY, checkpoint=tmp_path / "bad.pt")


def test_wrong_width_checkpoint_names_shapes(tmp_path) -> None:
    torch.save(build_model(TINY).state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        build_model(TINY.with_(feature_dim=32), checkpoint=tmp_path / "tiny.pt")


def test_missing_and_corrupt_checkpoint(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        build_model(TINY, checkpoint=tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        build_model(TINY, checkpoint=tmp_path / "junk.pt")


def test_checkpoint_is_loaded_without_executing_code(tmp_path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(CheckpointError):
        build_model(TINY, checkpoint=tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
