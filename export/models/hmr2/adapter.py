"""The torch side of HMR 2.0 for the export job, parity and benchmarks (``registry.adapter("hmr2")``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional, Tuple, Union

import torch

from hmr_trt.contract import ModelContract
from hmr_trt.export.models.adapter import ModelAdapter
from hmr_trt.export.models.checkpoint import match_state_dict

from .checkpoint import check_config, read_checkpoint
from .config import Hmr2Config
from .contract import CONTRACT, hmr2_graph
from .model import HMR2


def read_official_checkpoint(cfg: Hmr2Config, path: Union[str, Path]) -> dict:
    """A released Lightning checkpoint (``epoch=35-step=1000000.ckpt``, ``hmr2a.ckpt``) read with no pickled
    code run; its config must describe ``cfg`` (checked before any model is built). The network's state."""
    path = Path(path)
    state, fields, where = read_checkpoint(path)
    pos = state.get("backbone.pos_embed")
    width = int(pos.shape[-1]) if isinstance(pos, torch.Tensor) and pos.dim() == 3 else cfg.embed_dim
    check_config(fields, cfg, path, where, f"backbone width {width}" if width != cfg.embed_dim else None)
    return state


def load_official_checkpoint(model: HMR2, path: Union[str, Path]) -> None:
    """``read_official_checkpoint`` for ``model``'s config, then the network's keys matched strictly."""
    match_state_dict(model, read_official_checkpoint(model.cfg, path), path, "hmr2")


class Hmr2Adapter(ModelAdapter):
    contract = CONTRACT
    Config = Hmr2Config

    def tiny_config(self) -> Hmr2Config:
        """The same code at small widths (seconds in tests); the crop geometry stays the released one."""
        return Hmr2Config(embed_dim=32, depth=2, heads=2, token_dim=64, head_depth=2, head_heads=2, head_dim_head=16,
                          head_mlp=64)

    def contract_for(self, cfg: Hmr2Config) -> ModelContract:
        graph = hmr2_graph(cfg.image_size, cfg.token_dim, cfg.num_body_joints + 1)
        return replace(CONTRACT, graphs=(graph,) + CONTRACT.graphs[1:], crop_size=cfg.image_size,
                       focal_length=cfg.focal_length)

    def exportable(self, reference: torch.nn.Module, graph: str) -> torch.nn.Module:
        """A copy whose LayerNorms are written out in primitive ops (the TensorRT 8.6 parser has no
        LayerNormalization; TensorRT fuses the pattern); the weights are shared, not copied (2.5 GB at
        ViT-H), and the module names stay, so node scopes do too."""
        import copy

        from hmr_trt.export.models.glot.model import LayerNormForExport

        CONTRACT.graph(graph)
        shared = {id(t): t for t in list(reference.parameters()) + list(reference.buffers())}
        module = copy.deepcopy(reference, memo=shared).eval()
        for parent in list(module.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.LayerNorm):
                    setattr(parent, name, LayerNormForExport(child))
        return module

    def reference(self, cfg: Hmr2Config, checkpoint: Optional[Path] = None) -> HMR2:
        state = read_official_checkpoint(cfg, checkpoint) if checkpoint is not None else None  # before 2.5 GB of model
        model = HMR2(cfg)
        if state is not None:
            match_state_dict(model, state, checkpoint, "hmr2")
        return model.eval()

    def example_inputs(self, cfg: Hmr2Config, graph: str, batch: int, seed: int = 0) -> Tuple[torch.Tensor, ...]:
        CONTRACT.graph(graph)
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=gen),)

    def video_inputs(self, cfg: Hmr2Config, graph: str, video: Path, n: int) -> dict:
        """Crops of people in ``video``, cut as the runtime cuts them for this contract."""
        from hmr_trt.export.family_inputs import person_crops

        contract = self.contract_for(cfg)
        return {"images": person_crops(Path(video), n, contract.crop_size, contract.bbox_scale,
                                       aspect=contract.crop_aspect, antialias=contract.crop_antialias)}


ADAPTER = Hmr2Adapter()
