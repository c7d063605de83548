"""HMR 2.0 in PyTorch with the official state-dict key names (``backbone.*``, ``smpl_head.*``).

Data flow for one crop (released config, shapes per crop):
  crop (3, 256, 256) ImageNet-normalised RGB -> middle 192 columns (3, 256, 192)
  -> ViT-H: 16x16 patch conv (padding 2) -> 16 x 12 = 192 tokens of 1280, + absolute position
     -> 32 pre-norm blocks (16-head self-attention, MLP 5120, GELU) -> LayerNorm
  -> SMPL head: one query token (the embedding of a zero input) + position, 6 pre-norm layers of
     self-attention, cross-attention to the 192 image tokens (8 heads of 64) and MLP 1024
     -> token (1024,): the feature WHAM and GVHMR read
     -> linear read-outs added to the mean parameters: 24 6D rotations, 10 betas, camera [s, tx, ty]
  -> rotation matrices (Gram-Schmidt of the 6D pairs). The camera translation [tx, ty, 2 f / (S s)]
     at the config's focal length f for crop side S (the official ``pred_cam_t``) is the host's
     (``crop_translation``): a depth of ~40 m is no output for a 1e-3 float32 tier.
The body model (vertices, joints) is the pipeline's body-model graph on pose_rotmat and betas.

Attention is written as MatMul -> Softmax -> MatMul (the official form; ``attention="sdpa"`` uses
``scaled_dot_product_attention`` instead): the pattern TensorRT's MHA fusion matches.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import Hmr2Config


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, H * D) -> (B, H, N, D)."""
    b, n, _ = x.shape
    return x.reshape(b, n, heads, -1).permute(0, 2, 1, 3)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) -> (B, N, H * D)."""
    b, h, n, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, n, h * d)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, form: str, scale_q: bool) -> torch.Tensor:
    """softmax(q k^T * scale) v on (B, H, N, D) heads. ``scale_q``: scale q before the product (the
    ViT's order) rather than the product (the head's order); both as the official code."""
    if form == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    if scale_q:
        dots = torch.matmul(q * scale, k.transpose(-2, -1))
    else:
        dots = torch.matmul(q, k.transpose(-2, -1)) * scale
    return torch.matmul(dots.softmax(dim=-1), v)


# --- backbone: ViT-H ------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    def __init__(self, cfg: Hmr2Config):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.embed_dim, kernel_size=cfg.patch, stride=cfg.patch, padding=cfg.patch // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, rows * cols, E)


class VitAttention(nn.Module):
    def __init__(self, dim: int, heads: int, form: str):
        super().__init__()
        self.heads, self.form = heads, form
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = attend(qkv[0], qkv[1], qkv[2], self.scale, self.form, scale_q=True)
        return self.proj(_merge(out))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: Hmr2Config):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.attn = VitAttention(cfg.embed_dim, cfg.heads, cfg.attention)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.mlp = Mlp(cfg.embed_dim, cfg.embed_dim * cfg.mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, cfg: Hmr2Config):
        super().__init__()
        self.patch_embed = PatchEmbed(cfg)
        rows, cols = (cfg.image_size // cfg.patch, cfg.width // cfg.patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, rows * cols + 1, cfg.embed_dim))  # + the class-token slot
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.last_norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> tokens (B, N, E) (the official code returns them as a (B, E, rows, cols) map,
        which the head flattens back to these tokens)."""
        x = self.patch_embed(x)
        x = x + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        for blk in self.blocks:
            x = blk(x)
        return self.last_norm(x)


# --- SMPL head: cross-attention transformer decoder ---------------------------------------------------

class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x), **kwargs)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, form: str):
        super().__init__()
        self.heads, self.form, self.scale = heads, form, dim_head ** -0.5
        self.to_qkv = nn.Linear(dim, heads * dim_head * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_heads(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        return self.to_out(_merge(attend(q, k, v, self.scale, self.form, scale_q=False)))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int, dim_head: int, form: str):
        super().__init__()
        self.heads, self.form, self.scale = heads, form, dim_head ** -0.5
        self.to_kv = nn.Linear(context_dim, heads * dim_head * 2, bias=False)
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        k, v = (_heads(t, self.heads) for t in self.to_kv(context).chunk(2, dim=-1))
        q = _heads(self.to_q(x), self.heads)
        return self.to_out(_merge(attend(q, k, v, self.scale, self.form, scale_q=False)))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, dim),
                                 nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossAttnLayers(nn.Module):
    def __init__(self, cfg: Hmr2Config):
        super().__init__()
        d, form = cfg.token_dim, cfg.attention
        self.layers = nn.ModuleList([nn.ModuleList([
            PreNorm(d, SelfAttention(d, cfg.head_heads, cfg.head_dim_head, form)),
            PreNorm(d, CrossAttention(d, cfg.embed_dim, cfg.head_heads, cfg.head_dim_head, form)),
            PreNorm(d, FeedForward(d, cfg.head_mlp)),
        ]) for _ in range(cfg.head_depth)])

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for self_attn, cross_attn, ff in self.layers:
            x = self_attn(x) + x
            x = cross_attn(x, context=context) + x
            x = ff(x) + x
        return x


class TransformerDecoder(nn.Module):
    def __init__(self, cfg: Hmr2Config):
        super().__init__()
        self.to_token_embedding = nn.Linear(1, cfg.token_dim)  # of the zero token: its bias
        self.pos_embedding = nn.Parameter(torch.zeros(1, 1, cfg.token_dim))
        self.transformer = CrossAttnLayers(cfg)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """context (B, N, E) -> token (B, token_dim). The official head embeds a zero (B, 1, 1) input:
        0 * W + b is b exactly, so the token starts from the bias without a batch-shaped zero tensor."""
        b = context.shape[0]
        x = self.to_token_embedding.bias.reshape(1, 1, -1).expand(b, 1, -1) + self.pos_embedding
        return self.transformer(x, context=context)[:, 0]


class SMPLHead(nn.Module):
    def __init__(self, cfg: Hmr2Config):
        super().__init__()
        self.cfg = cfg
        npose = 6 * (cfg.num_body_joints + 1)
        self.transformer = TransformerDecoder(cfg)
        self.decpose = nn.Linear(cfg.token_dim, npose)
        self.decshape = nn.Linear(cfg.token_dim, 10)
        self.deccam = nn.Linear(cfg.token_dim, 3)
        self.register_buffer("init_body_pose", torch.zeros(1, npose))
        self.register_buffer("init_betas", torch.zeros(1, 10))
        self.register_buffer("init_cam", torch.zeros(1, 3))

    def forward(self, context: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """context tokens -> (pose 6D (B, 6 * 24), betas (B, 10), cam (B, 3), token (B, token_dim)).
        IEF iterations re-read the zero token each time (the released heads run one)."""
        pose, betas, cam = self.init_body_pose, self.init_betas, self.init_cam
        token = context.new_zeros(())
        for _ in range(self.cfg.ief_iters):
            token = self.transformer(context)
            pose = self.decpose(token) + pose
            betas = self.decshape(token) + betas
            cam = self.deccam(token) + cam
        return pose, betas, cam, token


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3): columns Gram-Schmidt of the two 3-vectors x[:3], x[3:6], and their cross."""
    a1, a2 = x[..., 0:3], x[..., 3:6]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.stack([b1[..., 1] * b2[..., 2] - b1[..., 2] * b2[..., 1],
                      b1[..., 2] * b2[..., 0] - b1[..., 0] * b2[..., 2],
                      b1[..., 0] * b2[..., 1] - b1[..., 1] * b2[..., 0]], dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


class HMR2(nn.Module):
    """crop (B, 3, S, S) -> pose_rotmat (B, 24, 3, 3), betas (B, 10), cam (B, 3) = [s, tx, ty] of the
    crop, token (B, token_dim)."""

    def __init__(self, cfg: Hmr2Config):
        super().__init__()
        self.cfg = cfg
        self.backbone = ViT(cfg)
        self.smpl_head = SMPLHead(cfg)
        self.seed_weights(cfg.seed)

    @torch.no_grad()
    def seed_weights(self, seed: int) -> None:
        """Deterministic untrained weights whose outputs move with the input (truncated normal 0.02 as
        the official initialisation; mean pose upright facing the camera, camera scale 0.9)."""
        gen = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if name.endswith("bias") or "norm" in name.split(".")[-2:][0]:
                p.copy_(torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.shape[-1]
                std = 0.02 if p.dim() <= 2 or "patch_embed" not in name else 1.0 / math.sqrt(fan_in)
                p.copy_((torch.randn(p.shape, generator=gen) * std).clamp_(-2 * std, 2 * std))
        head = self.smpl_head
        for name, p in head.named_parameters():  # sharp cross-attention: the token follows a few image patches
            if name.endswith(("to_q.weight", "to_kv.weight")):
                p.mul_(3.0 / (0.02 * math.sqrt(p.shape[1])))
        for lin, gain in ((head.decpose, 10.0), (head.decshape, 5.0), (head.deccam, 1.0)):
            lin.weight.mul_(gain)
        npose = head.init_body_pose.shape[1]
        pose = torch.tensor([1.0, 0, 0, 0, 1, 0]).repeat(npose // 6)
        pose[:6] = torch.tensor([1.0, 0, 0, 0, -1, 0])  # global orientation: pi about x (camera convention)
        head.init_body_pose.copy_(pose[None])
        head.init_betas.zero_()
        head.init_cam.copy_(torch.tensor([[0.9, 0.0, 0.0]]))

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        s = self.cfg.image_size
        lo = (s - self.cfg.width) // 2
        tokens = self.backbone(images[:, :, :, lo:lo + self.cfg.width])
        pose6d, betas, cam, token = self.smpl_head(tokens)
        pose_rotmat = rot6d_to_rotmat(pose6d.reshape(images.shape[0], -1, 6))
        return pose_rotmat, betas, cam, token


def crop_translation(cam: torch.Tensor, focal_length: float, crop: int) -> torch.Tensor:
    """The official ``pred_cam_t`` from the crop camera: [tx, ty, 2 f / (S s + 1e-9)]."""
    return torch.stack([cam[:, 1], cam[:, 2], 2 * focal_length / (crop * cam[:, 0] + 1e-9)], dim=-1)
