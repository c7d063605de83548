"""ViTPose's contract (torch-free): one ``frame``-family graph, crops -> heatmaps; no body model.

Crops are cut and heatmaps decoded by runtime/keypoints.py as the official test pipeline does (box -> centre
and scale at 3:4 padded 1.25, the UDP warp to 192x256, ImageNet normalisation; UDP + DARK decoding back to
frame pixels). The graph holds the flip test, so its ``heatmaps`` decode as they are.

Parity of a keypoint model (``body_model="keypoints"``: no vertices) is judged on what it gives: the
heatmaps (the FP32 per-output tier) and the keypoints decoded from them in pixels of the 192x256 crop,
where the machinery's "mm" figures read as crop pixels (hmr_trt/mesh.py ``keypoint_points``).
"""

from __future__ import annotations

from hmr_trt.contract import GraphSpec, ModelContract, Recipe, TensorSpec

from ..hmr2.contract import LAYERNORM, SOFTMAX

HEIGHT, WIDTH = 256, 192
KEYPOINTS = 17


def vitpose_graph(height: int = HEIGHT, width: int = WIDTH, keypoints: int = KEYPOINTS,
                  heatmap: tuple = (64, 48)) -> GraphSpec:
    """crops (N, 3, 256, 192) ImageNet-normalised RGB (runtime/keypoints.py ``topdown_crops``) -> heatmaps
    (N, 17, 64, 48), flip test included (runtime/keypoints.py ``decode_heatmaps`` -> frame pixels)."""
    return GraphSpec("vitpose", "model", (TensorSpec("crops", ("batch", 3, height, width)),),
                     (TensorSpec("heatmaps", ("batch", keypoints) + tuple(heatmap)),))


CONTRACT = ModelContract(
    name="vitpose",
    family="frame",
    description="ViTPose-H (Xu et al., NeurIPS 2022): ViT-H on a 256x192 crop and a deconvolution heatmap head, "
                "COCO-17 keypoints, flip test in the graph (the keypoints WHAM reads)",
    graphs=(vitpose_graph(),),
    checkpoint="vitpose-h-multi-coco.pth",
    feature_extractor="none",
    crop_size=HEIGHT,
    bbox_scale=1.25,  # the official box padding (runtime/keypoints.py cuts the 3:4 crops)
    crop_aspect=WIDTH / HEIGHT,
    body_model="keypoints",
    recipes=(
        Recipe("fp16", "fp16", keep=(LAYERNORM, SOFTMAX),
               description="FP16 GEMMs, convolutions and residual stream; LayerNorm and softmax in FP32"),
        Recipe("int8", "int8", keep=(LAYERNORM, SOFTMAX), int8_ops=("MatMul", "Gemm"),
               description="INT8 weight GEMMs of the backbone; LayerNorm, softmax and the head never quantized"),
    ),
    default_recipe={"fp16": "fp16", "int8": "int8"},
    # crop pixels, not mm (body_model "keypoints"): FP32 0.01 px; reduced precisions a fraction of a heatmap cell
    goals_mm={"fp32": 0.01, "fp16": 0.5, "int8": 1.0},
)
