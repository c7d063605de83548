"""trt-run reads the model from the contract: family stages, short tracks dropped before inference."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from hmr_trt import registry
from hmr_trt.errors import ConfigError
from hmr_trt.runtime.backends_select import Backends
from hmr_trt.runtime.pipeline import MIN_TRACK_LENGTH, RunOptions, StageTimer, _TrackGate, family_stage
from hmr_trt.runtime.track import TrackLog


class RecordingStage:
    def __init__(self) -> None:
        self.added: list = []
        self.ended = False

    def add(self, track_id, frame_index, crop) -> None:
        self.added.append((track_id, frame_index))

    def end(self) -> None:
        self.ended = True


def test_short_tracks_never_reach_inference() -> None:
    stage = RecordingStage()
    gate = _TrackGate(stage, min_frames=5)
    crop = np.zeros((2, 2, 3), np.uint8)
    for f in range(8):
        gate.add("long", f, crop)
        if f < 3:
            gate.add("short", f, crop)
    assert [a for a in stage.added if a[0] == "short"] == []
    assert [a for a in stage.added if a[0] == "long"] == [("long", f) for f in range(8)]  # held ones in order
    gate.end()
    assert stage.ended and gate.dropped_frames == 3
    assert all(t != "short" for t, _ in stage.added)
    with pytest.raises(ConfigError):
        _TrackGate(stage, 0)


def test_one_minimum_track_length() -> None:
    import inspect

    from hmr_trt.runtime import cli, track

    assert RunOptions(out=Path("o"), export_dir=Path("e")).min_track_frames == MIN_TRACK_LENGTH == track.MIN_TRACK_LENGTH
    assert inspect.signature(cli.run).parameters["min_track_frames"].default == MIN_TRACK_LENGTH
    assert inspect.signature(TrackLog.tracks).parameters["min_length"].default == MIN_TRACK_LENGTH


@pytest.mark.parametrize("family", ["scene"])
def test_other_families_are_refused_in_one_line(family) -> None:
    contract = dataclasses.replace(registry.contract("coseg"), family=family)
    backends = Backends(None, None, None, "none", np.zeros((0, 3)), "", contract)
    with pytest.raises(ConfigError, match=f"coseg is a {family} model: not supported by this runtime yet"):
        family_stage(backends, StageTimer(), RunOptions(out=Path("o"), export_dir=Path("e")))


def test_frame_models_get_the_frame_stage() -> None:
    from hmr_trt.runtime.frame_stage import FrameStage

    contract = dataclasses.replace(registry.contract("decomr"))
    backends = Backends(None, None, None, "none", np.zeros((0, 3)), "", contract)
    stage = family_stage(backends, StageTimer(), RunOptions(out=Path("o"), export_dir=Path("e"), backbone_batch=5))
    assert isinstance(stage, FrameStage) and stage.batch == 5 and stage.graph.name == "decomr"


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    pytest.importorskip("torch")
    from hmr_trt.export.pipeline import ExportOptions, run_export
    from hmr_trt.profile import ShapeProfile

    out = tmp_path_factory.mktemp("tiny") / "export"
    tiny = registry.adapter("coseg").tiny_config().with_(head_gain=0.5)
    run_export(ExportOptions(out=out, config=tiny, profile=ShapeProfile(1, 4, 8), with_backbone=False,
                             parity_windows=3, build_engines=False))
    return out, tiny


def test_border_modes_through_a_real_export(tiny_export, tmp_path) -> None:
    from hmr_trt.runtime.pipeline import run_features

    export_dir, tiny = tiny_export
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "f.npz", track_0=rng.standard_normal((20, tiny.feature_dim)).astype(np.float32),
             track_1=rng.standard_normal((5, tiny.feature_dim)).astype(np.float32))
    runs = {}
    for border in ("nearest", "repeat"):
        out = tmp_path / border
        summary = run_features(RunOptions(out=out, export_dir=export_dir, features=tmp_path / "f.npz",
                                          emit="center", border=border))
        assert summary["model"] == "coseg" and summary["border"] == border
        runs[border] = {t: np.load(out / f"track_{t}.npz") for t in ("0", "1")}
    a, b = runs["nearest"]["0"], runs["repeat"]["0"]
    assert len(a["frame_indices"]) == len(b["frame_indices"]) == 20
    h = 16 // 2
    interior = slice(h, 20 - (16 - 1 - h))  # frames 8..12: the same centred window in both modes
    np.testing.assert_allclose(a["pose_rotmat"][interior], b["pose_rotmat"][interior], atol=1e-6)
    assert not np.allclose(a["pose_rotmat"][:h], b["pose_rotmat"][:h], atol=1e-4)  # edges: other windows
    with pytest.raises(ConfigError, match="border must be one of"):
        run_features(RunOptions(out=tmp_path / "x", export_dir=export_dir, features=tmp_path / "f.npz",
                                border="edge"))
