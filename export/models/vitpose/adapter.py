"""The torch side of ViTPose for the export job, parity and benchmarks (``registry.adapter("vitpose")``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from hmr_trt.contract import ModelContract
from hmr_trt.export.models.adapter import ModelAdapter
from hmr_trt.export.models.checkpoint import match_state_dict

from .checkpoint import check_sizes, read_checkpoint
from .config import VitPoseConfig
from .contract import CONTRACT, vitpose_graph
from .model import VitPose


class VitPoseAdapter(ModelAdapter):
    contract = CONTRACT
    Config = VitPoseConfig

    def tiny_config(self) -> VitPoseConfig:
        """The same code at small widths (seconds in tests); the crop and heatmap geometry stay the released one."""
        return VitPoseConfig(embed_dim=32, depth=2, heads=2, deconv_filters=16)

    def contract_for(self, cfg: VitPoseConfig) -> ModelContract:
        graph = vitpose_graph(cfg.image_size, cfg.width, cfg.keypoints, cfg.heatmap_size)
        return replace(CONTRACT, graphs=(graph,), crop_size=cfg.image_size)

    def exportable(self, reference: torch.nn.Module, graph: str) -> torch.nn.Module:
        """HMR 2.0's: LayerNorms in primitive ops (TensorRT 8.6's parser has none), weights shared."""
        from hmr_trt.export.models.hmr2.adapter import ADAPTER as HMR2

        CONTRACT.graph(graph)
        return HMR2.exportable(reference, "hmr2")

    def reference(self, cfg: VitPoseConfig, checkpoint: Optional[Path] = None) -> VitPose:
        state = None
        if checkpoint is not None:  # read and checked before 2.5 GB of model is built
            state = read_checkpoint(checkpoint)
            check_sizes(state, cfg, checkpoint)
        model = VitPose(cfg)
        if state is not None:
            match_state_dict(model, state, checkpoint, "vitpose")
        return model.eval()

    def example_inputs(self, cfg: VitPoseConfig, graph: str, batch: int, seed: int = 0) -> Tuple[torch.Tensor, ...]:
        CONTRACT.graph(graph)
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn(batch, 3, cfg.image_size, cfg.width, generator=gen),)

    def video_inputs(self, cfg: VitPoseConfig, graph: str, video: Path, n: int) -> dict:
        """Crops of the people the HOG detector finds on frames spread over ``video`` (as the frame family's
        parity sets), cut as runtime/keypoints.py cuts them."""
        from hmr_trt.calibration.images import _take, iter_topdown_crops
        from hmr_trt.errors import InputSpecError

        CONTRACT.graph(graph)
        crops = _take(iter_topdown_crops(video), n)
        if len(crops) < n:
            raise InputSpecError(f"--video {video}: {len(crops)} people found, parity needs {n} crops; "
                                 "give a video with people in it")
        return {"crops": np.stack(crops).astype(np.float32)}


ADAPTER = VitPoseAdapter()
