"""FP16 keep rules shared by the models built on SPIN's regressor (TCMR, MPS-Net, VIBE): torch-free, for
their contracts. The ONNX node names are the TorchScript exporter's module scopes of ``export/models/spin.py``."""

from __future__ import annotations

from hmr_trt.contract import KeepRule

ROT6D = KeepRule("rot6d", ("ReduceL2", "Clip", "Expand", "Div", "Mul", "ReduceSum", "Sub", "Gather", "Unsqueeze",
                           "Concat", "Reshape"), r"^/[^/]+$",
                 "rot6d_to_rotmat (root scope): Gram-Schmidt divides by norms and subtracts projections, "
                 "losing orthonormality in FP16; the reshapes around it too, so rotations leave unrounded")
HEADS = KeepRule("regressor-heads", ("Gemm",), r"^/regressor/(decpose|decshape|deccam)(_\d+)?/Gemm$",
                 "the regressor's pose/shape/camera heads add to the running estimate each iteration")
