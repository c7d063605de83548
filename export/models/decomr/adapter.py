"""The torch side of DecoMR for the export job, parity and benchmarks (``registry.adapter("decomr")``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, Union

import torch

from hmr_trt.contract import ModelContract
from hmr_trt.errors import CheckpointError
from hmr_trt.export.models.adapter import ModelAdapter
from hmr_trt.export.models.checkpoint import load_torch_file, match_state_dict, state_dict_from

from .config import DecomrConfig
from .contract import CONTRACT, decomr_graph
from .model import FOREGROUND, DecoMR
from .uv_data import DecomrUVData, decomr_data

EXPORT_SCATTER = "dense"  # plugin-free: Equal + MatMul; TensorRT 8.6+ (ScatterElements-add needs 10.0+)


def load_official_checkpoint(model: DecoMR, path: Union[str, Path]) -> None:
    """The released ``h36m_up3d.pt`` (trainer dict with ``CNet`` and ``LNet``), strictly, no pickled code."""
    raw = load_torch_file(path, "decomr")
    if not isinstance(raw, Mapping) or not all(isinstance(raw.get(k), Mapping) for k in ("CNet", "LNet")):
        found = sorted(map(str, raw))[:8] if isinstance(raw, Mapping) else type(raw).__name__
        raise CheckpointError(f"decomr: {path} is not a DecoMR checkpoint: expected the state dicts CNet and "
                              f"LNet (found: {found}); pass the released h36m_up3d.pt")
    cnet = state_dict_from(raw, path, "decomr", keys=("CNet",))
    lnet = state_dict_from(raw, path, "decomr", keys=("LNet",))
    match_state_dict(model, {**{f"CNet.{k}": v for k, v in cnet.items()},
                             **{f"LNet.{k}": v for k, v in lnet.items()}}, path, "decomr")


class DecomrAdapter(ModelAdapter):
    contract = CONTRACT
    Config = DecomrConfig

    def __init__(self) -> None:
        self._uv: dict = {}
        self.data_dir: Optional[Path] = None  # --decomr-data; None: the synthetic layout

    def use_data_dir(self, path: Optional[Path]) -> None:
        """``--decomr-data DIR``: DecoMR's UV files (checked now: a bad folder fails before any export work)."""
        self.data_dir = None if path is None else Path(path)
        self.uv_data()

    def uv_data(self, data_dir: Optional[Union[str, Path]] = None) -> DecomrUVData:
        """``--decomr-data DIR`` (DecoMR's data/ folder) or None: hmr-trt's synthetic layout (cached)."""
        data_dir = data_dir if data_dir is not None else self.data_dir
        key = None if data_dir is None else str(Path(data_dir).resolve())
        if key not in self._uv:
            self._uv[key] = decomr_data(data_dir)
        return self._uv[key]

    def tiny_config(self) -> DecomrConfig:
        return DecomrConfig(resnet_layers=(1, 1, 1, 1), resnet_width=8, uv_channels=16)

    def contract_for(self, cfg: DecomrConfig, data_dir: Optional[Union[str, Path]] = None) -> ModelContract:
        graph = decomr_graph(self.uv_data(data_dir).num_vertices, cfg.img_res)
        return replace(CONTRACT, graphs=(graph,), crop_size=cfg.img_res)

    def reference(self, cfg: DecomrConfig, checkpoint: Optional[Path] = None,
                  data_dir: Optional[Union[str, Path]] = None) -> DecoMR:
        # the file sets every weight: the plain seeded draw underneath (shaping it costs minutes on a CPU)
        model = DecoMR(cfg if checkpoint is None else replace(cfg, trained_like=False), self.uv_data(data_dir))
        if checkpoint is not None:
            load_official_checkpoint(model, checkpoint)
        return model.eval()

    def exportable(self, reference: torch.nn.Module, graph: str) -> torch.nn.Module:
        CONTRACT.graph(graph)  # names the graphs on a typo
        form = reference.cfg.scatter if reference.cfg.scatter != "index_add" else EXPORT_SCATTER
        return reference.with_scatter(form).eval()  # "scatter" on request: ORT-CPU faster, TensorRT >= 10 only

    def pinned_reference(self, reference: DecoMR, inputs: Tuple[torch.Tensor, ...],
                         decisions: Mapping[str, torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """The reference's outputs with the foreground/UV-cell decisions taken from ``decisions["iuv"]``
        (the export's IUV image) and every continuous value its own (``Decision`` in the contract)."""
        return reference(*inputs, decide_from=decisions["iuv"])

    def decision_values(self, reference: DecoMR, inputs: Tuple[torch.Tensor, ...]) -> dict:
        """The reference's own decision tensors, by decision name."""
        return {"iuv": reference.iuv(*inputs)}

    def describe_decisions(self, reference: DecoMR, own: Mapping[str, Any], taken: Mapping[str, Any]) -> dict:
        """Pixels the export warps otherwise than the reference: foreground test flipped, or UV cell changed
        (foreground in both), and how far from the edge the reference's value was (the largest margin)."""
        import numpy as np

        res = reference.cfg.warp_res - 1
        # float32, as the model computes u * 63 before rounding it
        a, b = np.asarray(own["iuv"], np.float32), np.asarray(taken["iuv"], np.float32)
        fg_a, fg_b = a[:, 0] > FOREGROUND, b[:, 0] > FOREGROUND
        fg_flip = fg_a != fg_b
        scaled = a[:, 1:] * np.float32(res)
        changed = np.rint(scaled) != np.rint(b[:, 1:] * np.float32(res))  # (N, 2, H, W): u or v changed cell
        cell_flip = changed.any(axis=1) & fg_a & fg_b
        fg_margin = np.abs(a[:, 0] - FOREGROUND)[fg_flip]
        # distance of u * 63 (v * 63) to its rounding edge k + 0.5, in units of u, for the coordinate that changed
        edge = np.abs(scaled - np.floor(scaled) - 0.5) / res
        cell_margin = np.where(changed, edge, 0.0).max(axis=1)[cell_flip]
        return {"pixels": int(fg_a.size), "foreground_flips": int(fg_flip.sum()), "cell_flips": int(cell_flip.sum()),
                "largest_flip_margin": float(max(fg_margin.max(initial=0.0), cell_margin.max(initial=0.0)))}

    def example_inputs(self, cfg: DecomrConfig, graph: str, batch: int, seed: int = 0) -> Tuple[torch.Tensor, ...]:
        CONTRACT.graph(graph)
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn(batch, 3, cfg.img_res, cfg.img_res, generator=gen),)

    def video_inputs(self, cfg: DecomrConfig, graph: str, video: Path, n: int) -> dict:
        """Crops of people in ``video``, cut as the runtime cuts them (export/family_inputs.py)."""
        from hmr_trt.export.family_inputs import person_crops

        return {"images": person_crops(Path(video), n, cfg.img_res, CONTRACT.bbox_scale)}


ADAPTER = DecomrAdapter()


def save_released_format(model: DecoMR, path: Union[str, Path]) -> None:
    """Write ``model``'s weights as DecoMR's trainer saved ``h36m_up3d.pt``: ``CNet``, ``LNet`` and the
    optimizer/progress entries, in the pre-1.6 non-zip format (for tests and the official-parity tool)."""
    state = model.state_dict()
    cnet = {k[len("CNet."):]: v.clone() for k, v in state.items() if k.startswith("CNet.")}
    lnet = {k[len("LNet."):]: v.clone() for k, v in state.items() if k.startswith("LNet.")}
    params = list(model.parameters())
    adam_state = {i: {"step": 1000, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                  for i, p in enumerate(params[:2])}  # PyTorch 1.1's Adam: step a Python int
    optimizer = {"state": adam_state, "param_groups": [{"lr": 2.5e-4, "betas": (0.9, 0.999), "eps": 1e-8,
                                                "weight_decay": 0, "amsgrad": False,
                                                "params": list(range(len(params)))}]}
    torch.save({"CNet": cnet, "LNet": lnet, "optimizer": optimizer, "epoch": 30, "batch_idx": 0,
                "batch_size": 128, "dataset_perm": list(range(16)),  # the trainer's sampler saves a list
                "total_step_count": 123456}, str(path), _use_new_zipfile_serialization=False)
