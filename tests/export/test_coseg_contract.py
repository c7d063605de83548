"""coseg on the contract: the registered contract, the adapter's reference and exportable module."""

from __future__ import annotations

import torch

from hmr_trt import registry
from hmr_trt.contract import ModelContract
from hmr_trt.export.models.coseg.model import build_model


def test_contract_describes_coseg_and_round_trips() -> None:
    c = registry.contract("coseg")
    assert (c.family, c.emit, c.causal, c.window, c.feature_dim) == ("window", "all", False, 16, 2048)
    assert [g.name for g in c.graphs] == ["temporal", "body_model", "backbone"]
    assert c.model_graph.input_names == ("features",)
    assert c.model_graph.output_names == ("pose_rotmat", "betas", "cam")
    assert c.model_graph.inputs[0].shape == ("batch", 16, 2048)
    assert [r.name for r in c.recipe_for("fp16").keep] == ["attention-logits", "softmax", "dis-logits",
                                                           "mean-over-time", "stream-sum", "rot6d"]
    assert c.recipe_for("int8").precision == "int8"
    assert ModelContract.from_dict(c.to_dict()) == c


def test_adapter_reference_matches_the_model_and_exportable_matches_the_reference() -> None:
    adapter = registry.adapter("coseg")
    tiny = adapter.tiny_config()
    reference = adapter.reference(tiny)
    x = adapter.example_inputs(tiny, "temporal", 3, seed=1)
    direct = build_model(tiny)(*x)
    for a, b in zip(reference(*x), direct):
        assert torch.equal(a, b)
    exportable = adapter.exportable(reference, "temporal")
    assert exportable.cfg.fde_mode == "matrix" and reference.cfg.fde_mode == "fft"
    for a, b in zip(exportable(*x), reference(*x)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    shapes = [t.shape for t in adapter.contract_for(tiny).model_graph.outputs]
    assert shapes == [("batch", 16, 24, 3, 3), ("batch", 16, 10), ("batch", 16, 3)]
    assert [tuple(o.shape) for o in reference(*x)] == [(3, *s[1:]) for s in shapes]


def test_mean_params_hook_sets_the_regressor_start(tmp_path) -> None:
    import numpy as np

    adapter = registry.adapter("coseg")
    reference = adapter.reference(adapter.tiny_config())
    np.savez(tmp_path / "mean.npz", pose=np.ones(144, np.float32), shape=np.full(10, 2, np.float32),
             cam=np.array([1, 2, 3], np.float32))
    adapter.load_mean_params(reference, tmp_path / "mean.npz")
    assert torch.equal(reference.regressor.init_shape, torch.full((1, 10), 2.0))
    assert torch.equal(reference.regressor.init_cam, torch.tensor([[1.0, 2.0, 3.0]]))
