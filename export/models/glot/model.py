"""GLoT's inference graph, written from the paper and the official code's behaviour (sxl142/GLoT).

features (B, T=16, 2048) -> pose_rotmat (B, 1, 24, 3, 3), betas (B, 1, 10), cam (B, 1, 3) for the
middle frame T // 2. Data flow:

1. Global branch (``global_modeling``, GMM): ``proj`` 2048 -> 512, learned positions, 2 pre-norm
   transformer blocks, norm -> memory (B, T, 512); decoder ``decoder_embed`` 512 -> 256, positions,
   1 block, norm; ``out_proj`` 256 -> 2048; the middle frame -> SPIN regressor (3 iterations,
   ``fc2`` skipped as in the official forward) = the global estimate (pose6d, shape, cam).
2. Local branch: the 2 * 4 + 1 middle frames -> ``proj_short`` 2048 -> 256, positions, 3 blocks,
   norm; the middle token queries ``proj_mem(memory)`` by cross-attention (``local_trans_de``).
3. HSCR (``regressor``): one pass from the global estimate; KTD regresses each joint's 6D pose
   from its kinematic ancestors' outputs.

Training-only parts are kept as parameters so the released state dict loads strictly, and never
run: the masked-token MLP (``global_modeling.trans.mask_token_mlp``), the SPIN regressor's
``fc2``, KTD's ``decshape``/``deccam``. The official modules also hold two copies of the SMPL body
model as buffers (``*.smpl.*``); hmr-trt runs the body model as its own graph, so those keys are
checked and dropped by ``checkpoint.py`` instead of living here.

Quirk kept because the released weights were trained with it: KTD feeds joint j the global
estimate's elements j .. j+5 (a stride-1 slice), not its own 6D block 6j .. 6j+5.

Key names are the official ones. No dropout / drop-path (eval only); LayerNorm eps 1e-6; the 6D ->
rotation-matrix step normalises with eps 1e-6 as GLoT's ``lib/utils/geometry.py`` does.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from hmr_trt.export.models.spin import Regressor
from hmr_trt.export.seeded import module_arguments, shape_like_trained, shape_refiner, trained_like_features
from hmr_trt.export.smpl_io import SMPL_PARENTS

from .config import GlotConfig

LN_EPS = 1e-6
ROT6D_EPS = 1e-6  # GLoT's rot6d_to_rotmat normalises with eps 1e-6 (SPIN's with the default 1e-12)


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """(N, 6J) -> (N*J, 3, 3): Gram-Schmidt on the (3, 2) reading, columns b1, b2, b1 x b2."""
    x = x.reshape(-1, 3, 2)
    a1, a2 = x[:, :, 0], x[:, :, 1]
    b1 = F.normalize(a1, dim=1, eps=ROT6D_EPS)
    b2 = F.normalize(a2 - (b1 * a2).sum(dim=1, keepdim=True) * b1, dim=-1, eps=ROT6D_EPS)
    b3 = torch.stack((b1[:, 1] * b2[:, 2] - b1[:, 2] * b2[:, 1],  # b1 x b2 written out (no ONNX cross op)
                      b1[:, 2] * b2[:, 0] - b1[:, 0] * b2[:, 2],
                      b1[:, 0] * b2[:, 1] - b1[:, 1] * b2[:, 0]), dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


# --- transformer pieces ------------------------------------------------------------------------

class LayerNormForExport(nn.Module):
    """``nn.LayerNorm`` over the last axis in primitive ops (ReduceMean, Sub, Mul, Add, Sqrt, Div):
    the TensorRT 8.6 ONNX parser has no LayerNormalization. Shares the weights of ``norm``."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=-1, keepdim=True)
        var = (centred * centred).mean(dim=-1, keepdim=True)
        return centred / torch.sqrt(var + self.eps) * self.weight + self.bias


class Attention(nn.Module):
    """Multi-head self-attention, fused ``qkv`` projection (with bias), scale head_dim^-0.5."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, N, C/H)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # (B, H, N, N)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttention(nn.Module):
    """Queries ``x`` (B, Q, C) attend over ``mem`` (B, N, C); q/kv projections without bias."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.kv_l = nn.Linear(dim, dim * 2, bias=False)
        self.q_l = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        b, n, c = mem.shape
        h = self.num_heads
        kv = self.kv_l(mem).reshape(b, n, 2, h, c // h).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]  # (B, H, N, C/H)
        q = self.q_l(x).reshape(b, x.shape[1], h, c // h).transpose(1, 2)  # (B, H, Q, C/H)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # (B, H, Q, N)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, x.shape[1], c))  # (B, Q, C)


# --- global branch (GMM) ----------------------------------------------------------------------

class GlobalTransformer(nn.Module):
    """Encoder over all T frames and a half-width decoder (``transformer_global.Transformer``)."""

    def __init__(self, cfg: GlotConfig) -> None:
        super().__init__()
        d, half = cfg.d_model, cfg.d_model // 2
        # training only (fills masked frames from the mean pose); kept for the state dict
        self.mask_token_mlp = nn.Sequential(nn.Linear(cfg.pose_dim + cfg.num_betas + 3, 256), nn.ReLU(),
                                            nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, half))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.seqlen, d))
        self.blocks = nn.ModuleList(Block(d, cfg.num_head, 4 * d) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(d, eps=LN_EPS)
        self.decoder_blocks = nn.ModuleList(Block(half, cfg.num_head, 2 * d) for _ in range(cfg.n_layers // 2))
        self.decoder_embed = nn.Linear(d, half)
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, cfg.seqlen, half))
        self.decoder_norm = nn.LayerNorm(half, eps=LN_EPS)

    def forward_encoder(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_decoder(self, mem: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d/2)
        x = self.decoder_embed(mem) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_norm(x)


class GMM(nn.Module):
    """features -> encoder memory (B, T, d) and the global estimate of the middle frame."""

    def __init__(self, cfg: GlotConfig) -> None:
        super().__init__()
        self.mid_frame = cfg.mid_frame
        self.proj = nn.Linear(cfg.feature_dim, cfg.d_model)
        self.trans = GlobalTransformer(cfg)
        self.out_proj = nn.Linear(cfg.d_model // 2, cfg.feature_dim)
        self.regressor = Regressor(cfg.feature_dim, cfg.spin_hidden, cfg.spin_iters, cfg.num_joints,
                                   cfg.num_betas, use_fc2=False)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        mem = self.trans.forward_encoder(self.proj(x))  # (B, T, d)
        feature = self.out_proj(self.trans.forward_decoder(mem))[:, self.mid_frame]  # (B, 2048)
        pose, shape, cam = self.regressor(feature)  # (B, 6J), (B, 10), (B, 3)
        return mem, (pose[:, None], shape[:, None], cam[:, None])  # each (B, 1, .)


# --- local branch ------------------------------------------------------------------------------

class LocalTransformer(nn.Module):
    """Encoder over the 2 * stride_short + 1 middle frames (``transformer_local.Transformer``)."""

    def __init__(self, cfg: GlotConfig) -> None:
        super().__init__()
        d = cfg.short_d_model
        self.pos_embed = nn.Parameter(torch.zeros(1, 2 * cfg.stride_short + 1, d))
        self.blocks = nn.ModuleList(Block(d, cfg.short_num_head, 4 * d) for _ in range(cfg.short_n_layers))
        self.norm = nn.LayerNorm(d, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, d)
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


# --- HSCR: hierarchical SMPL regressor with the kinematic-tree decoder (KTD) --------------------

def ancestors(parents: Tuple[int, ...] = SMPL_PARENTS) -> List[List[int]]:
    """Each joint's ancestors, root first (joint 4 -> [0, 1]); KTD's input order."""
    out = []
    for j in range(len(parents)):
        chain, p = [], parents[j]
        while p >= 0:
            chain.insert(0, p)
            p = parents[p]
        out.append(chain)
    return out


class KTD(nn.Module):
    """Per-joint 6D regressors in joint order, each reading its ancestors' outputs."""

    def __init__(self, hidden: int, num_betas: int) -> None:
        super().__init__()
        self.ancestors = ancestors()
        self.joint_regs = nn.ModuleList(nn.Linear(hidden + 6 * len(a) + 6, 6) for a in self.ancestors)
        self.decshape = nn.Linear(hidden, num_betas)  # training only; kept for the state dict
        self.deccam = nn.Linear(hidden, 3)  # training only; kept for the state dict

    def forward(self, x: torch.Tensor, global_pose: torch.Tensor) -> torch.Tensor:  # (B, 1, H), (B, 1, 6J)
        pose: List[torch.Tensor] = []
        for j, (chain, reg) in enumerate(zip(self.ancestors, self.joint_regs)):
            # quirk of the released model: elements j .. j+5 of the global pose, not 6j .. 6j+5
            pose.append(reg(torch.cat([x] + [pose[i] for i in chain] + [global_pose[:, :, j:j + 6]], dim=-1)))
        return torch.cat(pose, dim=-1)  # (B, 1, 6J)


class HSCR(nn.Module):
    """Local feature + global estimate -> refined pose6d, shape, cam (one pass)."""

    def __init__(self, cfg: GlotConfig) -> None:
        super().__init__()
        h = cfg.hscr_hidden
        self.fc1 = nn.Linear(cfg.short_d_model + cfg.num_betas, h)  # shape/cam path: [x, init_shape]
        self.fc2 = nn.Linear(cfg.short_d_model + cfg.pose_dim, h)  # pose/cam path: [x, init_pose]
        self.decshape = nn.Linear(h, cfg.num_betas)
        self.deccam = nn.Linear(2 * h + 3, 3)
        self.local_reg = KTD(h, cfg.num_betas)

    def forward(self, x: torch.Tensor, init_pose: torch.Tensor, init_shape: torch.Tensor,
                init_cam: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # x (B, 1, C)
        xc_shape_cam = self.fc1(torch.cat([x, init_shape], dim=-1))  # (B, 1, H)
        xc_pose_cam = self.fc2(torch.cat([x, init_pose], dim=-1))  # (B, 1, H)
        pose = self.local_reg(xc_pose_cam, init_pose) + init_pose
        shape = self.decshape(xc_shape_cam) + init_shape
        cam = self.deccam(torch.cat([xc_pose_cam, xc_shape_cam, init_cam], dim=-1)) + init_cam
        return pose, shape, cam  # (B, 1, 6J), (B, 1, 10), (B, 1, 3)


# --- the model ---------------------------------------------------------------------------------

class GLoT(nn.Module):
    """features (B, T, C) -> pose_rotmat (B, 1, 24, 3, 3), betas (B, 1, 10), cam (B, 1, 3)."""

    def __init__(self, cfg: GlotConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj_short = nn.Linear(cfg.feature_dim, cfg.short_d_model)
        self.proj_mem = nn.Linear(cfg.d_model, cfg.short_d_model)
        self.local_trans_de = CrossAttention(cfg.short_d_model, cfg.cross_num_head)
        self.local_trans_en = LocalTransformer(cfg)
        self.regressor = HSCR(cfg)
        self.global_modeling = GMM(cfg)
        seeded_init_(self, cfg)
        if cfg.trained_like:  # a standing person and its crop camera, small deltas on people's features
            shape_glot_like_trained(self, cfg)

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        b = features.shape[0]
        mem, (init_pose, init_shape, init_cam) = self.global_modeling(features)  # (B, T, d), (B, 1, .)
        mid, s = cfg.mid_frame, cfg.stride_short
        x_short = self.local_trans_en(self.proj_short(features[:, mid - s:mid + s + 1]))  # (B, 2s+1, c)
        # The official code queries with tokens s-1, s, s+1 and keeps the middle answer at inference;
        # each query attends independently, so asking with token s alone gives the same answer.
        query = x_short[:, s:s + 1]  # (B, 1, c)
        feature = self.local_trans_de(query, self.proj_mem(mem))  # (B, 1, c)
        pose6d, shape, cam = self.regressor(feature, init_pose, init_shape, init_cam)
        rotmat = rot6d_to_rotmat(pose6d.reshape(b, cfg.pose_dim)).reshape(b, 1, cfg.num_joints, 3, 3)
        # reshapes to the sizes the model already has: they make the exported dims static
        return rotmat, shape.reshape(b, 1, cfg.num_betas), cam.reshape(b, 1, 3)  # (B,1,24,3,3), (B,1,10), (B,1,3)


def seeded_init_(model: GLoT, cfg: GlotConfig) -> None:
    """Deterministic default weights from ``cfg.seed`` (a private generator, never the global RNG):
    xavier-uniform Linear weights (gain ``cfg.init_gain``), small random biases so that outputs
    depend on the input through every path, unit LayerNorms, N(0, 0.02) positions."""
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight, gain=cfg.init_gain, generator=gen)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.02, generator=gen)
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
        for p in (model.local_trans_en.pos_embed, model.global_modeling.trans.pos_embed,
                  model.global_modeling.trans.decoder_pos_embed):
            p.normal_(0.0, 0.02, generator=gen)


def shape_glot_like_trained(model: GLoT, cfg: GlotConfig) -> None:
    """The global branch's SPIN regressor from a standing person with small deltas, then HSCR's heads
    (KTD's joint regressors, shape, camera) scaled to small zero-mean refinements of that estimate."""
    gen = torch.Generator().manual_seed(cfg.seed + 7919)
    features = trained_like_features(gen, 12, cfg.seqlen, cfg.feature_dim)
    shape_like_trained(model, model.global_modeling.regressor, cfg.seqlen, cfg.feature_dim, cfg.seed)
    args = module_arguments(model, model.regressor, lambda: model(features))
    ktd = model.regressor.local_reg
    heads = [(reg, slice(6 * j, 6 * j + 6), 0) for j, reg in enumerate(ktd.joint_regs)]
    heads += [(model.regressor.decshape, slice(None), 1), (model.regressor.deccam, slice(None), 2)]
    shape_refiner(model.regressor, heads, args)
