"""VIBE's contract (torch-free): every frame of a window, causal, plus a one-frame step graph that
carries the GRU state (true streaming: one GRU step per new frame)."""

from __future__ import annotations

from hmr_trt.contract import (
    GraphSpec,
    KeepRule,
    ModelContract,
    Recipe,
    TensorSpec,
    smpl_body_graph,
    spin_backbone_graph,
    window_outputs,
)

from ..spin_rules import HEADS, ROT6D

WINDOW, FEATURE_DIM, HIDDEN, LAYERS = 16, 2048, 1024, 2


def step_graph(feature_dim: int = FEATURE_DIM, hidden: int = HIDDEN, layers: int = LAYERS) -> GraphSpec:
    """features (B, C) + hidden (B, layers, H) -> this frame's parameters + next_hidden (B, layers, H)."""
    return GraphSpec("step", "step",
                     (TensorSpec("features", ("batch", feature_dim)), TensorSpec("hidden", ("batch", layers, hidden))),
                     (TensorSpec("pose_rotmat", ("batch", 24, 3, 3)), TensorSpec("betas", ("batch", 10)),
                      TensorSpec("cam", ("batch", 3)), TensorSpec("next_hidden", ("batch", layers, hidden))))


GRU = KeepRule("gru", ("GRU",), r"^/encoder/gru/GRU(_\d+)?$",
               "the recurrent state accumulates rounding frame after frame (unbounded in streaming)")

CONTRACT = ModelContract(
    name="vibe",
    family="window",
    description="VIBE (Kocabas et al., CVPR 2020): unidirectional GRU + SPIN regressor on every frame; causal",
    graphs=(
        GraphSpec("temporal", "model", (TensorSpec("features", ("batch", WINDOW, FEATURE_DIM)),),
                  window_outputs("batch", WINDOW)),
        step_graph(),
        smpl_body_graph(),
        spin_backbone_graph(),
    ),
    checkpoint="vibe_model_wo_3dpw.pth.tar",
    window=WINDOW,
    feature_dim=FEATURE_DIM,
    emit="all",
    causal=True,
    bbox_scale=1.1,
    recipes=(
        Recipe("fp16", "fp16", keep=(ROT6D, GRU), description="FP16 with the GRU and the 6D normalisation in FP32"),
        Recipe("fp16-all", "fp16", keep=(ROT6D,), description="FP16 GRU too (drift grows along a stream)"),
        Recipe("int8", "int8", keep=(ROT6D, GRU), int8_exclude=(GRU, HEADS),
               description="INT8 on the linear layers; GRU and regressor heads not quantized"),
    ),
    default_recipe={"fp16": "fp16", "int8": "int8"},
)
