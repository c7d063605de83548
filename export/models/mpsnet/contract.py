"""MPS-Net's contract (torch-free): 16-frame windows of SPIN features -> the middle frame (index 8).
Each window is computed on its own (the official code mixes windows of one batch; see model.py)."""

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

MOCA = KeepRule("moca-maps", ("MatMul", "Softmax", "Conv"),
                r"^/nonlocalblock/((MatMul|Softmax)(_\d+)?|conv_mask_forR/Conv)$",
                "MoCA's similarity maps: x x^T over 2048-d features overflows FP16; their softmaxes and fusion")
ATTENTION = KeepRule("hafi-attention", ("Softmax", "Tanh"),
                     r"^/nonlocalblock/attention(_\d+)?(/attention/attention\.\d(_\d+)?)?/(Softmax|Tanh)$",
                     "HAFI's 3-token attention scores: tanh-saturated logits, FP16 flattens them")

CONTRACT = ModelContract(
    name="mpsnet",
    family="window",
    description="MPS-Net (Wei et al., CVPR 2022): MoCA + HAFI, middle frame of 16, each window on its own",
    graphs=(
        GraphSpec("temporal", "model", (TensorSpec("features", ("batch", WINDOW, FEATURE_DIM)),),
                  window_outputs("batch", 1)),
        smpl_body_graph(),
        spin_backbone_graph(),
    ),
    checkpoint="mpsnet_model_best.pth.tar",
    window=WINDOW,
    feature_dim=FEATURE_DIM,
    emit="middle",
    causal=False,
    bbox_scale=1.1,
    recipes=(
        Recipe("fp16", "fp16", keep=(ROT6D, MOCA, ATTENTION),
               description="FP16 with MoCA's maps, the attention and the 6D normalisation in FP32"),
        Recipe("fp16-heads32", "fp16", keep=(ROT6D, MOCA, ATTENTION, HEADS),
               description="also the regressor's pose/shape/camera heads in FP32"),
        Recipe("int8", "int8", keep=(ROT6D, MOCA, ATTENTION), int8_exclude=(MOCA, ATTENTION, HEADS),
               description="INT8 on the 1x1 convs and linear layers; MoCA maps, attention, heads not quantized"),
    ),
    default_recipe={"fp16": "fp16", "int8": "int8"},
)
