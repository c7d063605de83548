"""HMR 2.0's contract (torch-free): one ``frame``-family graph, crop -> SMPL parameters, cameras and
the head's token, then the pipeline's body-model graph.

Crops are cut as the official demo cuts them (``hmr2/datasets/vitdet_dataset.py``): the detection
box as given (scale 1.0), widened or heightened to the 192:256 (width:height) aspect ratio, the
square of its longer side warped to 256x256 (frames blurred first when the box is over 2.2 times the
crop side), ImageNet normalisation; the graph itself slices the middle 192 columns. ``crop_aspect``
and ``crop_antialias`` tell the runtime so (runtime/crops.py). Keep rules match the node names of the
exported graph; tests check that every rule matches a node.
"""

from __future__ import annotations

from hmr_trt.contract import GraphSpec, KeepRule, ModelContract, Recipe, TensorSpec, smpl_body_graph

CROP = 256
TOKEN = 1024
JOINTS = 24


def hmr2_graph(crop: int = CROP, token: int = TOKEN, joints: int = JOINTS) -> GraphSpec:
    """images (B, 3, 256, 256) ImageNet-normalised RGB -> pose_rotmat (B, 24, 3, 3), betas (B, 10),
    cam (B, 3) = [s, tx, ty] of the crop (weak perspective, SPIN's convention), token (B, 1024) the SMPL
    head's output token (the feature WHAM and GVHMR read). The perspective cameras (the crop's at the
    contract's ``focal_length``, the whole image's) are the host's (runtime/cameras.py)."""
    return GraphSpec("hmr2", "model", (TensorSpec("images", ("batch", 3, crop, crop)),),
                     (TensorSpec("pose_rotmat", ("batch", joints, 3, 3)), TensorSpec("betas", ("batch", 10)),
                      TensorSpec("cam", ("batch", 3)), TensorSpec("token", ("batch", token))))


LAYERNORM = KeepRule("layernorm", ("ReduceMean", "Sub", "Mul", "Add", "Sqrt", "Div"),
                     r"/(norm\d?|last_norm)/(ReduceMean|Sub|Mul|Add|Sqrt|Div)(_\d+)?$",
                     "LayerNorm (exported in primitive ops, which TensorRT fuses; the 8.6 parser has no "
                     "LayerNormalization): statistics over 1280 (1024) channels of the residual stream overflow "
                     "or lose their low bits in FP16")
SOFTMAX = KeepRule("softmax", ("Softmax",), r"/Softmax$",
                   "attention softmax over 192 tokens: exponentials of FP16 logits lose the small weights")
READOUT = KeepRule("readout", ("Gemm", "Add"), r"^/smpl_head/(dec(pose|shape|cam)/Gemm|Add(_\d+)?)$",
                   "the linear read-outs and their sums with the mean pose, shape and camera: outputs directly")
POSTPROCESS = KeepRule("postprocess", ("Mul", "Div", "Sub", "ReduceSum", "ReduceL2", "Clip", "Expand", "Concat",
                                       "Gather", "Unsqueeze", "Slice", "Reshape"),
                       r"^/[A-Za-z0-9]+(_\d+)?$",
                       "Gram-Schmidt of the 6D rotations: top-level arithmetic on the outputs")
RESIDUAL = KeepRule("residual", ("Add",), r"^/backbone/blocks\.\d+/Add(_1)?$",
                    "the backbone's residual stream (each block's two residual sums): 32 blocks of FP16 sums "
                    "accumulate their rounding, and the stream's values grow with depth")
HEAD = KeepRule("head", ("MatMul", "Gemm", "Add", "Mul", "Div", "Softmax", "ReduceMean", "Sqrt", "Sub", "Erf",
                         "Reshape", "Transpose", "Slice", "Expand", "Concat"),
                r"^/smpl_head/",
                "the SMPL head (6 cross-attention layers on one query token: ~1% of the FLOPs)")

CONTRACT = ModelContract(
    name="hmr2",
    family="frame",
    description="HMR 2.0 (Goel et al., ICCV 2023; 4D-Humans): ViT-H on a 256x192 crop and a 6-layer "
                "cross-attention SMPL head, one crop per person",
    graphs=(hmr2_graph(), smpl_body_graph()),
    checkpoint="epoch=35-step=1000000.ckpt",
    feature_extractor="none",
    crop_size=CROP,
    bbox_scale=1.0,  # the official demo uses the detector's box as given
    crop_aspect=192 / 256,
    crop_antialias=True,
    focal_length=5000.0,  # EXTRA.FOCAL_LENGTH at MODEL.IMAGE_SIZE 256
    recipes=(
        Recipe("fp16", "fp16", keep=(LAYERNORM, SOFTMAX, READOUT, POSTPROCESS),
               description="FP16 GEMMs and residual stream; LayerNorm, softmax, the read-outs and the rotation/"
                           "camera arithmetic in FP32"),
        Recipe("fp16-res32", "fp16", keep=(LAYERNORM, SOFTMAX, READOUT, POSTPROCESS, RESIDUAL),
               description="as fp16, with the backbone's residual stream FP32 (the GEMMs, GELU and attention "
                           "products FP16)"),
        Recipe("fp16-head32", "fp16", keep=(LAYERNORM, SOFTMAX, READOUT, POSTPROCESS, HEAD),
               description="as fp16, with the whole SMPL head in FP32 (the backbone FP16)"),
        Recipe("int8", "int8", keep=(LAYERNORM, SOFTMAX, READOUT, POSTPROCESS), int8_exclude=(HEAD, POSTPROCESS),
               int8_ops=("MatMul", "Gemm"),
               description="INT8 weight GEMMs of the backbone; the head, LayerNorm and softmax never quantized"),
    ),
    default_recipe={"fp16": "fp16", "int8": "int8"},
)
