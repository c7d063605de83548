"""The torch side of the instance-aware network for the generic export job."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

import torch

from hmr_trt.contract import ModelContract, smpl_body_graph

from ..adapter import ModelAdapter
from .checkpoint import config_for_checkpoint, load_released, released_state
from .config import InstanceHMRConfig
from .contract import CONTRACT, maps_graph
from .model import InstanceHMR


class InstanceHMRAdapter(ModelAdapter):
    contract = CONTRACT
    Config = InstanceHMRConfig

    def tiny_config(self) -> InstanceHMRConfig:
        """128x128 input (16x16 maps), ResNet width 8 with one block per stage: same structure and keys
        (except the checkpoint's widths)."""
        return InstanceHMRConfig(image_size=128, resnet_width=8, resnet_layers=(1, 1, 1, 1),
                                 deconv_filters=(32, 32, 64))

    def contract_for(self, cfg: InstanceHMRConfig) -> ModelContract:
        graph = maps_graph(cfg.image_size, cfg.map_size, cfg.params_dim)
        return dataclasses.replace(self.contract, graphs=(graph, smpl_body_graph()), image_size=cfg.image_size)

    def reference(self, cfg: InstanceHMRConfig, checkpoint: Optional[Path] = None) -> InstanceHMR:
        if checkpoint is None:
            return InstanceHMR(cfg).eval()
        state, _smpl = released_state(checkpoint)
        cfg = config_for_checkpoint(cfg, state, checkpoint)
        model = InstanceHMR(cfg, seeded=False)
        load_released(model, state, checkpoint)
        return model.eval()

    def pinned_reference(self, reference: InstanceHMR, inputs: Tuple[torch.Tensor, ...],
                         decisions: Mapping[str, torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """The reference's maps with the export's center map (``decisions["centers"]``) in place of its own:
        people are then read at the export's peaks from the reference's camera and parameter maps
        (``hmr_trt.mesh.scene_people``); every continuous value read is the reference's (contract ``Decision``)."""
        _center, cam_map, params_map = reference(*inputs)
        return decisions["centers"].to(cam_map.dtype), cam_map, params_map

    def decision_values(self, reference: InstanceHMR, inputs: Tuple[torch.Tensor, ...]) -> dict:
        return {"centers": reference(*inputs)[0]}

    def describe_decisions(self, reference: InstanceHMR, own: Mapping[str, Any], taken: Mapping[str, Any]) -> dict:
        """Peaks the export reads elsewhere than the reference (``hmr_trt.mesh.scene_peak_cells``), and for each
        such cell how far the reference's score was from the comparison that decided it: its 5x5 neighbours'
        maximum (a local maximum or not) or the score of the best peak left out / the last one kept."""
        from hmr_trt.export.models.instancehmr.peaks import peak_flips

        return peak_flips(own["centers"], taken["centers"])

    def example_inputs(self, cfg: InstanceHMRConfig, graph: str, batch: int, seed: int = 0) -> Tuple[torch.Tensor, ...]:
        if graph != "maps":
            raise ValueError(f"instancehmr has no example inputs for graph {graph!r}")
        gen = torch.Generator().manual_seed(seed)
        low = torch.rand(batch, 3, 16, 16, generator=gen) * 255.0
        image = torch.nn.functional.interpolate(low, size=(cfg.image_size, cfg.image_size), mode="bilinear",
                                                align_corners=False)
        return (image.permute(0, 2, 3, 1).contiguous(),)

    def video_inputs(self, cfg: InstanceHMRConfig, graph: str, video: Path, n: int) -> dict:
        """Frames of ``video`` letterboxed as the runtime does (export/family_inputs.py)."""
        from hmr_trt.export.family_inputs import letterboxed_frames

        return {"image": letterboxed_frames(Path(video), n, cfg.image_size)}


ADAPTER = InstanceHMRAdapter()
