"""GLoT's contract (torch-free): a window model that emits the middle frame of each 16-frame window.

Keep-list and INT8 exclusions are regexes over the node names of the TorchScript export of
``adapter.exportable(model.GLoT)`` (LayerNorm written out in primitive ops; module scopes: ``/global_modeling/blocks.N/attn/...`` for the global encoder,
``/global_modeling/decoder_blocks.0/...``, ``/local_trans_en/blocks.N/...``, ``/local_trans_de/...``
for the cross-attention, ``/regressor/...`` for HSCR and KTD, and the root scope where
``rot6d_to_rotmat`` lives); ``tests/export/models/test_glot.py`` checks that every rule matches.
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

ATTENTION = r"/(blocks\.\d+/attn|decoder_blocks\.\d+/attn|local_trans_de)"
ROOT = r"^/[^/]+$"

LAYER_NORM = KeepRule(
    "layer-norm", ("ReduceMean", "Sub", "Mul", "Add", "Sqrt", "Div"),
    r"/(norm\d?|decoder_norm)/(ReduceMean|Sub|Mul|Add|Sqrt|Div)(_\d+)?$",
    "LayerNorm (exported in primitive ops): mean and variance over 256/512 channels in FP16 lose the "
    "small deviations, and every block's input passes through one")
ATTENTION_LOGITS = KeepRule(
    "attention-logits", ("MatMul", "Mul"), ATTENTION + r"/(MatMul|Mul)$",
    "q k^T and its head_dim^-1/2 scale are the softmax logits; FP16 keeps 11 bits of them")
SOFTMAX = KeepRule(
    "softmax", ("Softmax",), ATTENTION + r"/Softmax$",
    "exp() of FP16 logits and the normalising sum lose the small attention weights")
ROT6D = KeepRule(
    "rot6d", ("ReduceL2", "Clip", "Expand", "Div", "Mul", "ReduceSum", "Sub", "Gather", "Unsqueeze", "Concat",
              "Reshape"), ROOT,
    "rot6d_to_rotmat (root scope): Gram-Schmidt divides by FP16 norms and subtracts projections, losing "
    "orthonormality; the data movement around it too, so rotations leave unrounded")
# INT8 only: matrix products whose both inputs are activations, and the regressors' output heads.
ATTENTION_PRODUCTS = KeepRule(
    "attention-products", ("MatMul",), ATTENTION + r"/MatMul(_1)?$",
    "q k^T and attention x v multiply two activations; per-tensor INT8 scales do not fit either")
HEADS = KeepRule(
    "regressor-heads", ("Gemm", "MatMul"),
    r"^/(global_modeling/regressor/(decpose|decshape|deccam)(_\d+)?/Gemm|regressor/(decshape|deccam|local_reg/joint_regs\.\d+)/MatMul)$",
    "the SPIN, HSCR and KTD heads write pose/shape/camera increments directly: an INT8 step there is a "
    "rotation error no later layer corrects")


def glot_contract(window: int = 16, feature_dim: int = 2048) -> ModelContract:
    """GLoT's contract for a window of ``window`` frames of ``feature_dim`` features."""
    return ModelContract(
        name="glot",
        family="window",
        description="GLoT (Shen et al., CVPR 2023): global-local transformer over 16 SPIN feature frames "
                    "-> SMPL parameters of the middle frame",
        graphs=(
            GraphSpec("temporal", "model", (TensorSpec("features", ("batch", window, feature_dim)),),
                      window_outputs("batch", 1)),
            smpl_body_graph(),
            spin_backbone_graph(dim=feature_dim),
        ),
        checkpoint="table1_3dpw_weights.pth.tar",
        window=window,
        feature_dim=feature_dim,
        emit="middle",
        causal=False,
        feature_extractor="spin_resnet50",
        crop_size=224,
        bbox_scale=1.2,
        body_model="smpl",
        recipes=(
            Recipe("fp16", "fp16", keep=(LAYER_NORM, ATTENTION_LOGITS, SOFTMAX, ROT6D),
                   description="FP16 with LayerNorm, attention logits/softmax and rot6d in FP32"),
            Recipe("fp16-rot6d", "fp16", keep=(ROT6D,),
                   description="FP16 everywhere but rot6d_to_rotmat (for measuring what the keep-list buys)"),
            Recipe("int8", "int8", keep=(LAYER_NORM, ATTENTION_LOGITS, SOFTMAX, ROT6D),
                   int8_exclude=(ATTENTION_PRODUCTS, HEADS),
                   description="INT8 Gemm/MatMul of the projections and MLPs; attention products and the "
                               "regressor heads not quantized; FP16 keep-list as for fp16"),
        ),
        default_recipe={"fp16": "fp16", "int8": "int8"},
    )


CONTRACT = glot_contract()
