"""ViTPose in PyTorch with the official state-dict key names (``backbone.*``, ``keypoint_head.*``).

Data flow for one crop (released config):
  crop (3, 256, 192) ImageNet-normalised RGB
  -> ViT-H (HMR 2.0's code, export/models/hmr2/model.py: the same architecture): 16x16 patch conv
     (padding 2) -> 16 x 12 = 192 tokens of 1280, + absolute position -> 32 pre-norm blocks -> LayerNorm
  -> token map (1280, 16, 12)
  -> head: 2 x (ConvTranspose 4x4 stride 2 no bias, BatchNorm, ReLU) -> (256, 64, 48) -> 1x1 conv -> (17, 64, 48)
Flip test (``flip_test``): the crop and its mirror run as one batch of 2N; the mirror's heatmaps are
mirrored back with each left/right keypoint pair swapped and averaged with the plain ones (the official
``TopDown.forward_test`` with ``flip_back``, no heatmap shift).
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn

from ..hmr2.model import ViT
from .config import VitPoseConfig

# COCO-17 left/right pairs: eyes, ears, shoulders, elbows, wrists, hips, knees, ankles
FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def flip_index(keypoints: int) -> list:
    """The channel order of mirrored heatmaps: each pair's two keypoints swapped."""
    order = list(range(keypoints))
    for a, b in FLIP_PAIRS:
        order[a], order[b] = b, a
    return order


class HeatmapHead(nn.Module):
    """``TopdownHeatmapSimpleHead`` at the config's sizes: ``deconv_layers`` (Sequential of ConvTranspose2d,
    BatchNorm2d, ReLU per layer: keys 0, 1, 3, 4) and ``final_layer``."""

    def __init__(self, cfg: VitPoseConfig):
        super().__init__()
        layers: list = []
        channels = cfg.embed_dim
        for _ in range(cfg.deconv_layers):
            layers += [nn.ConvTranspose2d(channels, cfg.deconv_filters, kernel_size=4, stride=2, padding=1,
                                          output_padding=0, bias=False),
                       nn.BatchNorm2d(cfg.deconv_filters), nn.ReLU(inplace=True)]
            channels = cfg.deconv_filters
        self.deconv_layers = nn.Sequential(*layers) if layers else nn.Identity()
        self.final_layer = nn.Conv2d(channels, cfg.keypoints, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.deconv_layers(x))


class VitPose(nn.Module):
    """crops (N, 3, 256, 192) -> heatmaps (N, 17, 64, 48)."""

    def __init__(self, cfg: VitPoseConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ViT(cfg)
        self.keypoint_head = HeatmapHead(cfg)
        self.register_buffer("flip_order", torch.tensor(flip_index(cfg.keypoints)), persistent=False)
        self.seed_weights(cfg.seed)

    @torch.no_grad()
    def seed_weights(self, seed: int) -> None:
        """Deterministic untrained weights (truncated normal 0.02 as the official initialisation, unit norms,
        BatchNorm statistics drawn near (0, 1)) whose heatmaps move with the input."""
        gen = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            leaf = name.split(".")[-2] if "." in name else name
            if name.endswith("bias") or "norm" in leaf:
                p.copy_(torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.shape[-1]
                std = 0.02 if p.dim() <= 2 else 1.0 / math.sqrt(fan_in)
                p.copy_((torch.randn(p.shape, generator=gen) * std).clamp_(-2 * std, 2 * std))
        for m in self.keypoint_head.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(1.0 + 0.1 * torch.rand(m.running_var.shape, generator=gen))

    def heatmaps(self, crops: torch.Tensor) -> torch.Tensor:
        """One pass, no flip test."""
        n = crops.shape[0]
        rows, cols = self.cfg.image_size // self.cfg.patch, self.cfg.width // self.cfg.patch
        tokens = self.backbone(crops)  # (N, rows * cols, E)
        grid = tokens.transpose(1, 2).reshape(n, -1, rows, cols)  # (N, E, rows, cols)
        return self.keypoint_head(grid)

    def forward(self, crops: torch.Tensor) -> Tuple[torch.Tensor]:
        """(heatmaps,): the graph's outputs as a tuple, in contract order."""
        if not self.cfg.flip_test:
            return (self.heatmaps(crops),)
        n = crops.shape[0]
        both = self.heatmaps(torch.cat([crops, crops.flip(3)]))  # (2N, K, H, W)
        mirrored = both[n:].index_select(1, self.flip_order).flip(3)
        return ((both[:n] + mirrored) * 0.5,)
