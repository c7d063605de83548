"""TCMR's contract (torch-free): 16-frame windows of SPIN features -> the middle frame (index 8)."""

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

WINDOW, FEATURE_DIM = 16, 2048

SOFTMAX = KeepRule("attention-softmax", ("Softmax", "Tanh"), r"^/encoder/attention(/attention/attention\.\d)?/(Softmax|Tanh)$",
                   "the 3-token attention scores: tanh-saturated logits, FP16 flattens them")
GRUS = KeepRule("grus", ("GRU",), r"^/encoder/gru_(cur|bef|aft)/GRU(_\d+)?$",
                "recurrent state accumulates rounding over 16 steps")

CONTRACT = ModelContract(
    name="tcmr",
    family="window",
    description="TCMR (Choi et al., CVPR 2021): three GRUs (all/past/future) + attention, middle frame of 16",
    graphs=(
        GraphSpec("temporal", "model", (TensorSpec("features", ("batch", WINDOW, FEATURE_DIM)),),
                  window_outputs("batch", 1)),
        smpl_body_graph(),
        spin_backbone_graph(),
    ),
    checkpoint="tcmr_demo_model.pth.tar",
    window=WINDOW,
    feature_dim=FEATURE_DIM,
    emit="middle",
    causal=False,
    bbox_scale=1.2,
    recipes=(
        Recipe("fp16", "fp16", keep=(ROT6D, SOFTMAX), description="FP16 with the 6D normalisation and attention in FP32"),
        Recipe("fp16-rnn32", "fp16", keep=(ROT6D, SOFTMAX, GRUS), description="also the GRUs in FP32"),
        Recipe("int8", "int8", keep=(ROT6D, SOFTMAX), int8_exclude=(GRUS, SOFTMAX, HEADS),
               description="INT8 on the linear layers; GRUs, attention and regressor heads not quantized"),
    ),
    default_recipe={"fp16": "fp16", "int8": "int8"},
)
