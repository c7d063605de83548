"""The instance-aware network's contract (torch-free): one whole padded image in, maps out."""

from __future__ import annotations

from hmr_trt.contract import Decision, GraphSpec, KeepRule, ModelContract, Recipe, TensorSpec, smpl_body_graph

IMAGE, MAP, PARAMS = 512, 64, 79  # released eval configs: input 512, centermap_size 64, 79 SMPL channels


def maps_graph(image: int = IMAGE, map_size: int = MAP, params: int = PARAMS) -> GraphSpec:
    """image (B, S, S, 3) 0-255 RGB, padded square -> center (B, 1, M, M), raw camera (B, 3, M, M) and
    parameter maps (B, P, M, M); the host applies the camera scale 1.1 ** x (runtime/scene.py)."""
    return GraphSpec("maps", "model", (TensorSpec("image", ("batch", image, image, 3)),),
                     (TensorSpec("center_map", ("batch", 1, map_size, map_size)),
                      TensorSpec("cam_map", ("batch", 3, map_size, map_size)),
                      TensorSpec("params_map", ("batch", params, map_size, map_size))))


# The last 1x1 convs write the maps the host thresholds (center at 0.2) and samples; the input
# normalisation sees 0-255 values.
_HEADS = KeepRule("map_heads", ("Conv",), r"^/(final_layers\.[123]/final_layers\.[123]\.2|params_outconv)/Conv$",
                  "the output 1x1 convs: center scores are thresholded at 0.2, camera scale is 1.1 ** x")
# The FP32 head outputs feed back into the identity/parameter branches through Concats: those stay FP32
# so that every Concat sees one type (the FP16 converter does not cast a graph output it re-reads).
_HEAD_CONCATS = KeepRule("head_concats", ("Concat",), r"^/Concat_[2-5]$",
                         "concats of features with the FP32 center/joint/identity maps")
_PREPROCESS = KeepRule("preprocess", ("Div", "Sub"), r"^/backbone/(Div|Sub)(_\d+)?$",
                       "0-255 input and ImageNet normalisation")

CONTRACT = ModelContract(
    name="instancehmr",
    family="scene",
    description="Instance-aware contrastive multi-person network (seed 004; ROMP-based, ResNet-50): "
                "one padded 512x512 image -> center, camera and SMPL parameter maps, no detector",
    graphs=(maps_graph(), smpl_body_graph()),
    checkpoint="(official InstanceHMR_release ResNet-50 .pkl: model_state_dict with module. keys)",
    feature_extractor="none",
    crop_size=0,
    bbox_scale=1.0,
    image_size=IMAGE,
    recipes=(
        Recipe("fp16", "fp16", keep=(_HEADS, _HEAD_CONCATS), description="FP16 with the map heads in FP32"),
        Recipe("int8", "int8", keep=(_HEADS, _HEAD_CONCATS), int8_exclude=(_HEADS, _PREPROCESS),
               int8_ops=("Conv",),
               description="INT8 convolutions (the three deconvolutions stay float); map heads and input "
                           "normalisation excluded"),
    ),
    default_recipe={"fp16": "fp16", "int8": "int8"},
    decisions=(
        Decision("centers", "Conv", r"^/final_layers\.1/final_layers\.1\.2/Conv$",
                 "the center map: each person's camera and SMPL parameters are read at a center-map peak (a 5x5 "
                 "local maximum among the best of the image); two peaks within round-off of each other, or of "
                 "a neighbour, can put the peak one cell over, and the person is then read elsewhere"),
    ),
)
