"""DecoMR's contract (torch-free): one ``frame``-family graph, crop -> mesh vertices and camera.

The vertex count is that of the UV data's mesh: 6890 with DecoMR's own files (SMPL), 3624 with
hmr-trt's synthetic layout; ``contract`` here is the released model's, ``DecomrAdapter.contract_for``
gives the one of a configuration. Precision keep rules match the node names of the exported graph
with the chosen scatter form (``dense``); tests check that every rule matches a node.
"""

from __future__ import annotations

from hmr_trt.contract import Decision, GraphSpec, KeepRule, ModelContract, Recipe, TensorSpec

SMPL_VERTICES = 6890


def decomr_graph(vertices: int = SMPL_VERTICES, crop: int = 224) -> GraphSpec:
    """images (B, 3, crop, crop) ImageNet-normalised RGB -> vertices (B, V, 3), cam (B, 3) = [s, tx, ty]."""
    return GraphSpec("decomr", "model", (TensorSpec("images", ("batch", 3, crop, crop)),),
                     (TensorSpec("vertices", ("batch", vertices, 3)), TensorSpec("cam", ("batch", 3))))


KEEP = (
    KeepRule("iuv-heads", ("Conv", "Sigmoid"),
             r"^/CNet/dp_(mask|uv)_end/dp_(mask|uv)_end\.[12]/(Conv|Sigmoid)$",
             "the IUV heads decide which pixels are foreground (conf > 0.5) and which UV cell each lands in "
             "(round(uv * 63)): FP16 keeps 11 bits, a step of 1/32 cell near u = 1, enough to move pixels"),
    KeepRule("uv-warp", ("Mul", "Round", "Greater", "MatMul", "Div", "Cast"),
             r"^/LNet/(Mul|Round|Greater|MatMul|Div|Cast)(_\d+)?$",
             "the image->UV scatter: the cell index, the foreground test, the one-hot MatMul summing up to "
             "3136 pixels per cell and the division by the pixel count; its Casts to float (grid coordinates, "
             "one-hot masks) stay float32 too"),
    KeepRule("vertex-resample", ("GridSample", "ReduceSum", "Div"), r"^/(GridSample|ReduceSum|Div)$",
             "bilinear samples of the location map and their mean per vertex are the output positions in metres"),
    KeepRule("upsample", ("Resize",), r"^/(CNet|LNet)/.*/Resize$",
             "the IUV and location decoders' upsampling: its scales input must stay float32 (ONNX Resize), so the node "
             "stays FP32 (a nearest/bilinear copy: nothing to gain in FP16)"),
)

# Everything upstream of the decisions: ResNet-50, the IUV decoder and heads. In FP32, the export's IUV image
# matches FP32's to round-off, so the FP16 graph warps the same pixels to the same UV cells.
CNET_FP32 = KeepRule("cnet", ("Conv", "Relu", "Add", "InstanceNormalization", "Mul", "Reshape", "Resize", "Sigmoid",
                              "MaxPool", "GlobalAveragePool", "Flatten", "Concat"), r"^/CNet/",
                     "CNet decides which pixels are foreground and which UV cell each lands in; any FP16 upstream of "
                     "those decisions moves thousands of pixels across a cell edge (the seeded weights: inputs "
                     "rounded to FP16 alone move the mesh 15 mm)")

CONTRACT = ModelContract(
    name="decomr",
    family="frame",
    description="DecoMR (Zeng et al., CVPR 2020): dense correspondence (IUV) -> UV location map -> mesh, "
                "one 224x224 crop per person",
    graphs=(decomr_graph(),),
    checkpoint="h36m_up3d.pt",
    feature_extractor="none",
    crop_size=224,
    bbox_scale=1.2,  # the official demo's OpenPose-box rescale (its --bbox path uses the box as given)
    body_model="none",
    recipes=(
        Recipe("fp16", "fp16", keep=KEEP,
               description="FP16 with the IUV heads, the UV scatter and the vertex resampling in FP32"),
        Recipe("fp16-lnet", "fp16", keep=KEEP + (CNET_FP32,),
               description="FP16 after the decisions only: CNet (backbone, IUV decoder and heads) FP32, LNet's "
                           "hourglass and decoders FP16"),
        Recipe("int8", "int8", keep=KEEP, int8_exclude=KEEP, int8_ops=("Conv", "MatMul", "Gemm"),
               description="INT8 convolutions; the IUV heads, UV scatter and resampling never quantized"),
    ),
    # fp16-lnet: 9.6 mm mean on the sample video's crops with 49% of the weights and 64% of the FLOPs in FP16;
    # fp16 (every node after the input FP16 but the warp): 95 mm, the IUV image moves 1640 pixels to other cells
    default_recipe={"fp16": "fp16-lnet", "int8": "int8"},
    decisions=(
        Decision("iuv", "Concat", r"^/CNet/Concat$",
                 "the IUV image [foreground prob, u, v]: a pixel is warped when prob > 0.5 and lands in UV cell "
                 "round(u * 63), round(v * 63); real crops have pixels within FP32 round-off of those edges"),
    ),
)
