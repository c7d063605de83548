"""hmr-trt: video human-mesh-recovery networks from PyTorch to ONNX and TensorRT.

Subpackages, in the one direction imports flow:
``hmr_trt.export`` (the only place torch lives) -> ``hmr_trt.engines`` -> ``hmr_trt.runtime``;
``hmr_trt.calibration`` needs numpy, onnx and onnxruntime only.
"""

__version__ = "0.1.0"
