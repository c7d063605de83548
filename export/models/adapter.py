"""The torch side of a model, one small class per model (optimum-style per-architecture config).

``hmr_trt.registry.adapter(name)`` returns the model's ``ADAPTER``; the export job, parity, the INT8
sweep and the benchmarks call only these methods, never branch on model names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Tuple

import torch

from hmr_trt.contract import ModelContract
from hmr_trt.errors import ConfigError


class ModelAdapter:
    """Subclass per model. ``Config`` is a frozen dataclass with ``to_dict``/``from_dict``."""

    contract: ModelContract
    Config: Any

    def default_config(self) -> Any:
        """The released configuration (the official demo's)."""
        return self.Config()

    def tiny_config(self) -> Any:
        """The same structure at small widths, for fast unit tests."""
        raise NotImplementedError

    def contract_for(self, cfg: Any) -> ModelContract:
        """The contract with shapes for ``cfg`` (tiny configs have other widths); default: unchanged."""
        return self.contract

    def reference(self, cfg: Any, checkpoint: Optional[Path] = None) -> torch.nn.Module:
        """The torch reference in eval mode: seeded default weights (outputs move with the input),
        then the official released checkpoint when given (strict; ``CheckpointError`` on mismatch).
        ``forward(*inputs)`` returns the model graph's outputs as a tuple, in contract order."""
        raise NotImplementedError

    def exportable(self, reference: torch.nn.Module, graph: str) -> torch.nn.Module:
        """The module exported as ``graph`` (same weights; export-friendly ops). Default: the reference."""
        return reference

    def example_inputs(self, cfg: Any, graph: str, batch: int, seed: int = 0) -> Tuple[torch.Tensor, ...]:
        """Inputs for tracing ``graph`` at ``batch``."""
        raise NotImplementedError

    # --- optional hooks (defaults work for every model) --------------------------------------
    def use_data_dir(self, path: Optional[Path]) -> None:
        """``trt-export --decomr-data DIR``: model data files the user supplies (None: the model's default).
        Models that take none refuse a path."""
        if path is not None:
            raise ConfigError(f"model {self.contract.name} takes no data folder (--decomr-data {path}); drop it")

    def video_inputs(self, cfg: Any, graph: str, video: Path, n: int) -> Optional[dict]:
        """Per-image models: ``n`` model-graph inputs from real frames of ``video`` ({input name: array}),
        for the export's "video" parity set; None (the default): no such set (window models build theirs
        from backbone features)."""
        return None

    def with_window(self, cfg: Any, window: int) -> Any:
        """``cfg`` with ``window`` frames per window (``trt-export --window``); models without one refuse."""
        import dataclasses

        if not dataclasses.is_dataclass(cfg) or "window" not in {f.name for f in dataclasses.fields(cfg)}:
            raise ConfigError(f"model {self.contract.name}: --window does not apply (its config has no window)")
        return dataclasses.replace(cfg, window=window)

    def pinned_reference(self, reference: torch.nn.Module, inputs: Tuple[torch.Tensor, ...],
                         decisions: Any) -> Tuple[torch.Tensor, ...]:
        """Models whose contract lists ``decisions``: the reference's outputs with those decisions taken
        from the given tensors ({decision name: tensor}, the export's values) instead of its own."""
        raise NotImplementedError(f"model {self.contract.name} declares no decisions")

    def decision_values(self, reference: torch.nn.Module, inputs: Tuple[torch.Tensor, ...]) -> dict:
        """The reference's own decision tensors ({decision name: tensor}) for ``inputs``."""
        raise NotImplementedError(f"model {self.contract.name} declares no decisions")

    def describe_decisions(self, reference: torch.nn.Module, own: Any, taken: Any) -> dict:
        """Optional: model-specific figures on how the export's decisions differ from the reference's
        ({decision name: array} each), e.g. how many pixels changed side and how close to the edge."""
        return {}

    def load_mean_params(self, reference: torch.nn.Module, path: Path) -> None:
        """Replace the regressor's start (SPIN ``smpl_mean_params.npz``); default: the model takes none."""
        raise ConfigError(f"model {self.contract.name} takes no --mean-params file")
