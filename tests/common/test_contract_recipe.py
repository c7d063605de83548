"""Recipe.int8_ops: the op types an INT8 recipe quantizes (MatMul/Gemm unless the contract says Conv too)."""

from __future__ import annotations

import json

import pytest

from hmr_trt import registry
from hmr_trt.contract import INT8_OPS, Recipe
from hmr_trt.errors import ConfigError


def test_int8_ops_default_round_trip_and_old_manifests() -> None:
    assert Recipe("int8", "int8").int8_ops == INT8_OPS == ("MatMul", "Gemm")
    conv = Recipe("int8", "int8", int8_ops=("Conv", "Gemm"))
    assert Recipe.from_dict(json.loads(json.dumps(conv.to_dict()))) == conv
    old = {k: v for k, v in conv.to_dict().items() if k != "int8_ops"}  # written before int8_ops existed
    assert Recipe.from_dict(old).int8_ops == INT8_OPS


@pytest.mark.parametrize("ops", [(), ("GRU",), ("Conv", "ConvTranspose")])
def test_int8_ops_outside_what_the_quantizer_handles_are_refused(ops) -> None:
    with pytest.raises(ConfigError, match="int8_ops must be a non-empty subset of MatMul, Gemm, Conv"):
        Recipe("int8", "int8", int8_ops=ops)


def test_cnn_models_quantize_convs_and_temporal_models_gemms() -> None:
    assert "Conv" in registry.contract("decomr").recipe_for("int8").int8_ops
    assert registry.contract("instancehmr").recipe_for("int8").int8_ops == ("Conv",)
    assert registry.contract("coseg").recipe_for("int8").int8_ops == INT8_OPS
