"""coseg's contract (torch-free): a window model that emits every frame of its T-frame window.

The FP16 keep-list names the TorchScript exporter's module scopes of ``model.py``: ``/stage1/dem``
(DEM), ``/stage1/dis``, ``/stage2/dis_frag{1,2}``, ``/dis_all`` (DIS), ``/regressor``, and the root
scope, where ``rot6d_to_rotmat`` and the reshapes around the regressor live. The INT8 recipe names
no node up front: ``calibration/quantize.py``'s sensitivity sweep picks the MatMul/Gemm groups left
in float on top of ``int8_exclude``.
"""

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

WINDOW = 16
FEATURE_DIM = 2048

FP16_KEEP = (
    KeepRule("attention-logits", ("MatMul", "Mul"), r"^/stage1/dem/(MatMul|Mul)$",
             "q k^T and its 1/sqrt(a_k) scale are the logits of the DEM softmax: FP16 keeps 11 bits, "
             "and the softmax exponentiates differences between logits"),
    KeepRule("softmax", ("Softmax",), r"^/(stage1/dem|stage1/dis|stage2/dis_frag\d+|dis_all)/Softmax$",
             "exp() of FP16 logits overflows past 11 and the normalising sum loses the small terms"),
    KeepRule("dis-logits", ("Gemm",), r"/(dis|dis_frag\d+|dis_all)/mlp/mlp\.2/Gemm$",
             "the DIS MLP's last layer makes the logits of the DIS softmax (stream weights)"),
    KeepRule("mean-over-time", ("ReduceMean",), r"^/(stage1/dem|stage1/dis|stage2/dis_frag\d+|dis_all)/ReduceMean",
             "means over the T frames (DEM excitation, Eq. 3; DIS pooling): long FP16 sums lose low bits"),
    KeepRule("stream-sum", ("ReduceSum",), r"^/(stage1/dis|dis_all)/ReduceSum$",
             "the DIS weighted sum of streams feeds the regressor directly"),
    KeepRule("rot6d", ("ReduceL2", "Clip", "Expand", "Div", "Mul", "ReduceSum", "Sub",
                       "Gather", "Unsqueeze", "Concat", "Reshape"), r"^/[^/]+$",
             "rot6d_to_rotmat (root scope): Gram-Schmidt divides by FP16 norms and subtracts "
             "projections, losing orthonormality; data movement too, so rotations leave unrounded"),
)

GRUS = KeepRule("grus", ("GRU",), r"/gru/GRU(_\d+)?$",
                "the bidirectional GRUs of the temporal encoders (DEM, TE_f, TE_h): their hidden state runs over "
                "the 16 frames, and they read the input features directly")


def temporal_graph(window: int = WINDOW, feature_dim: int = FEATURE_DIM, joints: int = 24,
                   betas: int = 10) -> GraphSpec:
    """features (B, T, C) -> pose_rotmat (B, T, J, 3, 3), betas (B, T, 10), cam (B, T, 3)."""
    return GraphSpec("temporal", "model", (TensorSpec("features", ("batch", window, feature_dim)),),
                     window_outputs("batch", window, joints, betas))


def make_contract(window: int = WINDOW, feature_dim: int = FEATURE_DIM, joints: int = 24,
                  betas: int = 10) -> ModelContract:
    return ModelContract(
        name="coseg",
        family="window",
        description="two-stage co-segmentation network (CVPR 2023): per-frame SMPL for every frame of a window",
        graphs=(temporal_graph(window, feature_dim, joints, betas), smpl_body_graph(betas=betas),
                spin_backbone_graph()),
        window=window,
        feature_dim=feature_dim,
        emit="all",
        causal=False,
        recipes=(
            Recipe("fp16", "fp16", keep=FP16_KEEP,
                   description="FP16 storage; attention/DIS logits, softmaxes, time means and rot6d stay FP32"),
            Recipe("fp16-rnn32", "fp16", keep=FP16_KEEP + (GRUS,),
                   description="also the GRUs and their inputs in FP32 (most of the weights)"),
            Recipe("int8", "int8", description="symmetric INT8 Q/DQ on MatMul/Gemm, calibrated on real feature "
                   "windows; the sensitivity sweep leaves the layer groups that drift most in float"),
        ),
        default_recipe={"fp16": "fp16", "int8": "int8"},
    )


CONTRACT = make_contract()
