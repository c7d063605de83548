"""WHAM's contract (torch-free): a causal recurrent model run as two graphs, ``init`` (a track's
first frame -> its state) and ``step`` (one frame of every live track and their states -> that
frame's outputs and the next states). The step graph is the model graph; its state inputs are the
names of ``STATE`` and come back as ``next_<name>`` outputs (runtime/wham_stream.py)."""

from __future__ import annotations

from typing import Dict, Tuple

from hmr_trt.contract import GraphSpec, KeepRule, ModelContract, Recipe, TensorSpec

# per-frame step inputs and outputs (batch axis first, then these); cfg-dependent sizes in graphs()
N_JOINTS, N_POSE, N_FEET = 17, 24, 4
STATE = ("enc_h", "enc_c", "traj_h", "traj_c", "dec_h", "dec_c", "ref_h", "ref_c", "kp3d", "root", "pose", "trans",
         "feet_world", "feet_reset", "root_ref", "trans_ref", "started", "feat_ok")
OUTPUTS: Dict[str, Tuple[int, ...]] = {"pose_rotmat": (N_POSE, 3, 3), "betas": (10,), "cam": (3,), "cam_t": (3,),
                                       "contact": (N_FEET,), "root_world": (3, 3), "trans_world": (3,)}


def state_shapes(d_embed: int, n_layers: int, refiner_layers: int) -> Dict[str, Tuple[int, ...]]:
    dc = d_embed + N_JOINTS * 3
    return {"enc_h": (n_layers, d_embed), "enc_c": (n_layers, d_embed), "traj_h": (n_layers, dc),
            "traj_c": (n_layers, dc), "dec_h": (n_layers, dc), "dec_c": (n_layers, dc),
            "ref_h": (refiner_layers, d_embed), "ref_c": (refiner_layers, d_embed), "kp3d": (N_JOINTS * 3,),
            "root": (6,), "pose": (N_POSE * 6,), "trans": (3,), "feet_world": (N_FEET, 3), "feet_reset": (N_FEET, 3),
            "root_ref": (6,), "trans_ref": (3,), "started": (1,), "feat_ok": (1,)}


def frame_shapes(d_feat: int) -> Dict[str, Tuple[int, ...]]:
    return {"keypoints": (N_JOINTS * 2 + 3,), "mask": (N_JOINTS,), "features": (d_feat,), "cam_angvel": (6,),
            "bbox": (3,), "camera": (3,)}


def init_shapes() -> Dict[str, Tuple[int, ...]]:
    return {"init_global_orient": (3, 3), "init_body_pose": (N_POSE - 1, 3, 3), "init_betas": (10,),
            "keypoints": (N_JOINTS * 2 + 3,)}


def graphs(d_embed: int = 512, n_layers: int = 3, refiner_layers: int = 2, d_feat: int = 1024) -> Tuple[GraphSpec, ...]:
    states = state_shapes(d_embed, n_layers, refiner_layers)
    spec = lambda name, shape: TensorSpec(name, ("batch",) + tuple(shape))  # noqa: E731
    step = GraphSpec("step", "model",
                     tuple(spec(k, v) for k, v in frame_shapes(d_feat).items()) + tuple(spec(k, v) for k, v in states.items()),
                     tuple(spec(k, v) for k, v in OUTPUTS.items()) + tuple(spec("next_" + k, v) for k, v in states.items()))
    init = GraphSpec("init", "init", tuple(spec(k, v) for k, v in init_shapes().items()),
                     tuple(spec(k, v) for k, v in states.items()), precision_passes=False)
    return step, init


# The step graph's node names are flat (``/rnn_1/LSTM_2``, ``/declayer0_1/Gemm``, ``/integrator/layer1/Gemm``):
# the recipes convert the linear layers (Gemm) and, in fp16-lstm, the LSTMs; everything else (the body
# model's skinning, the 6D rotations, the rollout's running sums over tens of metres) stays FP32.
REST = KeepRule("rest", ("Add", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Div", "Equal", "Expand",
                         "Gather", "Greater", "MatMul", "Mul", "Not", "ReduceL2", "ReduceMean", "ReduceSum",
                         "Reshape", "Shape", "Slice", "Squeeze", "Sub", "Transpose", "Unsqueeze", "Where"), r".",
                "skinning, rotations and the world rollout: sums of metres whose FP16 spacing is centimetres")
LSTM = KeepRule("lstm", ("LSTM",), r"/LSTM(_\d+)?$", "the recurrent state accumulates rounding frame after frame")

CONTRACT = ModelContract(
    name="wham",
    family="track",
    description="WHAM (Shin et al., CVPR 2024): unidirectional LSTMs over ViTPose keypoints and HMR 2.0 tokens; "
                "camera-frame SMPL and the world trajectory, causal, one step per frame",
    graphs=graphs(),
    checkpoint="wham_vit_w_3dpw.pth.tar",
    feature_dim=1024,
    emit="all",
    causal=True,
    feature_extractor="hmr2",
    crop_size=256,
    bbox_scale=1.2,
    recipes=(Recipe("fp16", "fp16", keep=(REST, LSTM), description="FP16 linear layers; the LSTMs, skinning and "
                                                                   "rollout in FP32"),
             Recipe("fp16-lstm", "fp16", keep=(REST,), description="FP16 linear layers and LSTMs; skinning and "
                                                                   "rollout in FP32")),
    default_recipe={"fp16": "fp16"},
)
