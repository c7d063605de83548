"""The instance-aware multi-person network (seed 004, Table 1; DCVL-3D/InstanceHMR_release, built on ROMP).

One padded RGB image (B, S, S, 3) in 0-255 -> maps at S/8 (64x64 for S = 512):
    center_map (B, 1, M, M)   raw person-center confidence (no sigmoid; thresholded at 0.2 on the host)
    cam_map    (B, 3, M, M)   raw weak-perspective camera (scale exponent, tx, ty); the host applies 1.1 ** x
    params_map (B, P, M, M)   SMPL parameters: global_orient 6D, 21 body joints axis-angle, 10 betas (P = 79)

Data flow (module names are the released checkpoint's keys, without its ``module.`` prefix):
    backbone: ResNet-50 (stride 32) + 3 deconvs -> features (B, 64, S/4, S/4); + 2 coordinate channels
    final_layers[1|2|3]: center, camera and joint-heatmap heads (stride-2 conv, BasicBlocks, 1x1 conv)
    centerid_* / jointid_*: center and joint instance maps (64 ch) from the features and the center/joint maps;
        the center instance map gets a sine positional encoding
    params_*: the parameter head reads the features with (center map, center instance map) and
        (joint maps, joint instance map), fuses both and returns the parameter map.
The contrastive projectors (``ct_projector``, ``jt_projector``) only train; they are kept so that the
released state dict loads strictly. ROMP writes ``1.1 ** x`` into the camera map in place; here the graph
returns the raw map (as ROMP's own ONNX does) and ``postprocess`` / ``runtime.scene`` apply it.
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

import numpy as np
import torch
from torch import nn

from hmr_trt.export.backbone import Bottleneck, resnet_layer

from .config import CAM_DIM, JOINTS, InstanceHMRConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# shaped seeded weights: the sample video's people (median box 78 px of a 576-px-high frame, letterboxed to
# the input) are about 0.2 of the input's half-height: weak-perspective scale 0.12 for a 1.7 m body
PEOPLE_ACROSS = 6  # person crops side by side in a calibration mosaic: people about as tall as in the video
SCENE_SCALE = 0.12
_SEEDED: dict = {}  # seeded state dicts by configuration (the calibration passes run once per process)
# the SPIN regressors' output spreads (export/seeded.py) tripled: measured over every cell of the person
# mosaics, they left people read on the tiny config's random images moving 36 mm, on video frames 20 mm (< 50)
PARAM_SPREAD = 3.0
CARRIER_OFFSET = 1.5  # cell coordinates in [-1, 1] carried through the camera head's ReLUs shifted by this


# --- building blocks (ROMP's basic_modules, same key names) -------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class TransBlock(nn.Module):
    """Conv (with bias) -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


# --- backbone --------------------------------------------------------------------------------------------

class ResNet50Deconv(nn.Module):
    """ROMP's ResNet_50: ImageNet normalisation inside, conv1..layer4, then three stride-2 deconvs."""

    def __init__(self, cfg: InstanceHMRConfig) -> None:
        super().__init__()
        w = cfg.resnet_width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes = w
        self.layer1 = self._make_layer(w, cfg.resnet_layers[0], 1)
        self.layer2 = self._make_layer(w * 2, cfg.resnet_layers[1], 2)
        self.layer3 = self._make_layer(w * 4, cfg.resnet_layers[2], 2)
        self.layer4 = self._make_layer(w * 8, cfg.resnet_layers[3], 2)
        layers = []
        for planes in cfg.deconv_filters:  # kernel 4, stride 2, padding 1: exact x2 upsampling
            layers += [nn.ConvTranspose2d(self.inplanes, planes, 4, 2, 1, 0, bias=False), nn.BatchNorm2d(planes),
                       nn.ReLU()]
            self.inplanes = planes
        self.deconv_layers = nn.Sequential(*layers)
        # broadcast over the batch (ROMP maps F.normalize over the batch in Python: a fixed-batch unroll)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layer = resnet_layer(self.inplanes, planes, blocks, stride)
        self.inplanes = planes * Bottleneck.expansion
        return layer

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2) / 255.0  # (B, 3, S, S)
        x = (x - self.mean) / self.std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, w, S/4, S/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 32w, S/32, S/32)
        return self.deconv_layers(x)  # (B, 64, S/4, S/4)


# --- constant maps ----------------------------------------------------------------------------------------

def coord_maps(size: int) -> torch.Tensor:
    """(1, 2, size, size): channel 0 the column, channel 1 the row, both scaled to [-1, 1]."""
    r = torch.arange(size, dtype=torch.float32) / (size - 1) * 2 - 1
    return torch.stack((r.view(1, size).expand(size, size), r.view(size, 1).expand(size, size))).unsqueeze(0)


def sine_position_encoding(channels: int, size: int, temperature: float = 10000.0) -> torch.Tensor:
    """(1, channels, size, size) DETR-style normalised sine encoding: rows' half, then columns' half,
    each interleaving sin (even) and cos (odd) frequencies."""
    half = channels // 2
    pos = torch.arange(1, size + 1, dtype=torch.float32)
    pos = pos / (size + 1e-6) * 2 * math.pi  # (size,)
    dim_t = temperature ** (2 * (torch.arange(half, dtype=torch.float32) // 2) / half)
    emb = pos[:, None] / dim_t  # (size, half)
    emb = torch.stack((emb[:, 0::2].sin(), emb[:, 1::2].cos()), dim=2).flatten(1)  # (size, half) interleaved
    y = emb.t()[:, :, None].expand(half, size, size)  # varies along rows
    x = emb.t()[:, None, :].expand(half, size, size)  # varies along columns
    return torch.cat((y, x)).unsqueeze(0)


# --- the network ------------------------------------------------------------------------------------------

def _head(cin: int, cout: int, cfg: InstanceHMRConfig) -> nn.Sequential:
    """One map head: stride-2 conv block, ``head_block_num`` BasicBlocks, 1x1 conv (ROMP's _make_head_layers)."""
    c = cfg.head_channels
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(cin, c, 3, 2, 1), nn.BatchNorm2d(c), nn.ReLU()),
        nn.Sequential(*[nn.Sequential(BasicBlock(c)) for _ in range(cfg.head_block_num)]),
        nn.Conv2d(c, cout, 1),
    )


def _projector(c: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c, c, bias=False), nn.ReLU(), nn.Linear(c, c, bias=False), nn.ReLU(),
                         nn.Linear(c, c, bias=False))


class InstanceHMR(nn.Module):
    def __init__(self, cfg: InstanceHMRConfig, seeded: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        feat, idc, m = cfg.backbone_channels + 2, cfg.id_channels, cfg.map_size
        self.backbone = ResNet50Deconv(cfg)
        # index 0 is unused in the released model (None); 1 center, 2 camera, 3 joint heatmaps
        self.final_layers = nn.ModuleList([None, _head(feat, 1, cfg), _head(feat, CAM_DIM, cfg),
                                           _head(feat, JOINTS, cfg)])
        self.centerid_trans1 = TransBlock(feat, 128, 2)
        self.centerid_resblock1 = BasicBlock(128)
        self.centerid_trans2 = TransBlock(128 + 1 + JOINTS, 128, 1)
        self.centerid_resblock2 = BasicBlock(128)
        self.centerid_outconv = nn.Conv2d(128, idc, 1)
        self.jointid_trans1 = TransBlock(feat, 128, 2)
        self.jointid_resblock1 = BasicBlock(128)
        self.jointid_trans2 = TransBlock(128 + 1 + JOINTS, 128, 1)
        self.jointid_resblock2 = BasicBlock(128)
        self.jointid_outconv = nn.Conv2d(128, idc, 1)
        self.ct_projector = _projector(idc)  # training only
        self.jt_projector = _projector(idc)  # training only
        self.params_trans1 = TransBlock(feat, 64, 2)
        self.params_trans_c = TransBlock(64 + 1 + idc, 64, 1)
        self.params_trans_j = TransBlock(64 + JOINTS + idc, 64, 1)
        self.params_resblock1 = BasicBlock(128)
        self.params_resblock2 = BasicBlock(128)
        self.params_outconv = nn.Conv2d(128, cfg.params_dim, 1)
        self.register_buffer("coordmaps", coord_maps(cfg.feature_size), persistent=False)
        self.register_buffer("pos_enc", sine_position_encoding(idc, m), persistent=False)
        if seeded:  # False when a checkpoint overwrites every weight anyway
            key = tuple(sorted((k, str(v)) for k, v in cfg.to_dict().items()))
            if key not in _SEEDED:  # measured once per configuration and process
                seeded_init(self, cfg)
                _SEEDED[key] = {k: v.clone() for k, v in self.state_dict().items()}
            self.load_state_dict(_SEEDED[key])

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.backbone(image)  # (B, 64, S/4, S/4)
        x = torch.cat((x, self.coordmaps.expand(x.shape[0], -1, -1, -1)), 1)  # (B, 66, S/4, S/4)
        center_map = self.final_layers[1](x)  # (B, 1, M, M)
        cam_map = self.final_layers[2](x)  # (B, 3, M, M) raw; scale = 1.1 ** cam_map[:, 0] on the host
        joint_maps = self.final_layers[3](x)  # (B, 24, M, M)

        x_cid = self.centerid_resblock1(self.centerid_trans1(x))  # (B, 128, M, M)
        x_cid = self.centerid_resblock2(self.centerid_trans2(torch.cat((x_cid, center_map, joint_maps), 1)))
        center_id = self.centerid_outconv(x_cid) + self.pos_enc  # (B, 64, M, M)
        x_jid = self.jointid_resblock1(self.jointid_trans1(x))
        x_jid = self.jointid_resblock2(self.jointid_trans2(torch.cat((x_jid, center_map, joint_maps), 1)))
        joint_id = self.jointid_outconv(x_jid)  # (B, 64, M, M)

        x_p = self.params_trans1(x)  # (B, 64, M, M)
        x_c = self.params_trans_c(torch.cat((x_p, center_map, center_id), 1))
        x_j = self.params_trans_j(torch.cat((x_p, joint_maps, joint_id), 1))
        x_p = self.params_resblock2(self.params_resblock1(torch.cat((x_c, x_j), 1)))  # (B, 128, M, M)
        params_map = self.params_outconv(x_p)  # (B, P, M, M)
        return center_map, cam_map, params_map


# --- seeded default weights ----------------------------------------------------------------------------

def _calibration_images(cfg: InstanceHMRConfig, gen: torch.Generator) -> torch.Tensor:
    """Seeded images (2, S, S, 3) 0-255 from smooth to pixel noise, so BN statistics cover both; shaped
    like a trained network (``cfg.trained_like``): two mosaics of the sample video's people instead."""
    if cfg.trained_like:
        from hmr_trt.export.seeded import person_mosaics

        return torch.from_numpy(person_mosaics(cfg.image_size, PEOPLE_ACROSS, 2).astype(np.float32))
    images = []
    for cells in (8, cfg.image_size):
        low = torch.rand(1, 3, cells, cells, generator=gen) * 255.0
        images.append(nn.functional.interpolate(low, size=(cfg.image_size, cfg.image_size), mode="bilinear",
                                                align_corners=False))
    return torch.cat(images).permute(0, 2, 3, 1).contiguous()


def _calibrate_bn(bn: nn.BatchNorm2d, inputs: Tuple[torch.Tensor, ...]) -> None:
    x = inputs[0]
    bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
    bn.running_var.fill_(float(x.var(dim=(0, 2, 3)).mean()) + bn.eps)


@torch.no_grad()
def seeded_init(model: InstanceHMR, cfg: InstanceHMRConfig) -> None:
    """Deterministic weights from ``cfg.seed`` (never the global RNG) whose maps move with the image.

    He-normal convolutions; BN statistics calibrated on seeded images (so activations stay O(1)
    through the 60 layers without amplifying round-off); the final 1x1 convs scaled so each map's
    values have std ``cfg.output_std``, and the global-orientation 6D bias set to the identity rotation.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            fan_in = mod.weight[0].numel() if not isinstance(mod, nn.ConvTranspose2d) else \
                mod.weight.shape[0] * mod.weight[0, 0].numel() / 4
            mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
            if mod.bias is not None:
                mod.bias.zero_()
        elif isinstance(mod, nn.BatchNorm2d):
            mod.reset_parameters()
    for block in model.modules():  # residual branches start small (as zero-init-gamma ResNets): less chaotic
        last = block.bn3 if isinstance(block, Bottleneck) else block.bn2 if isinstance(block, BasicBlock) else None
        if last is not None:
            last.weight.fill_(cfg.residual_gain)
    images = _calibration_images(cfg, gen)
    heads = [model.final_layers[1][2], model.final_layers[2][2], model.final_layers[3][2], model.params_outconv]
    seen: Dict[nn.Module, torch.Tensor] = {}
    hooks = [h.register_forward_hook(lambda mod, inp, out: seen.__setitem__(mod, out)) for h in heads]
    # pass 1: each BN's statistics from its own input (layer by layer, so later layers see calibrated
    # ones): per-channel means, but ONE variance per layer, so nearly constant channels are not blown
    # up to unit variance (that would amplify float round-off thousands of times).
    hooks += [m.register_forward_pre_hook(_calibrate_bn) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    model.eval()
    model(images)
    for group in (heads[:3], heads[3:]):  # the parameter head reads the others' maps: scale it after them
        if group[0] is heads[3]:
            for hook in hooks[4:]:
                hook.remove()
            model(images)  # pass 2: the parameter head's input with the rescaled center/joint maps
        for conv in group:
            spread = seen[conv].std().clamp_min(1e-6)  # one gain per head (per channel would amplify noise)
            conv.weight.mul_(cfg.output_std / spread)
            conv.bias.zero_()
    for hook in hooks[:4]:
        hook.remove()
    model.params_outconv.bias[:6] = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])  # 6D identity (columns a1, a2)
    if cfg.trained_like:
        shape_like_trained(model, images)


def param_slices(params_dim: int) -> Dict[str, slice]:
    """Where each SMPL part sits in the parameter map (after the 3 camera channels)."""
    if params_dim == 79:  # released code: global_orient 6D, body pose 21 x axis-angle, betas
        return {"global_orient": slice(0, 6), "body_pose": slice(6, 69), "betas": slice(69, 79)}
    return {"global_orient": slice(0, 6), "body_pose": slice(6, 132), "betas": slice(132, 142)}  # paper: 22 x 6D


def _standing_params(params_dim: int) -> torch.Tensor:
    """The parameter map's start: ``export.seeded.standing_mean_params`` in this network's layout (root 6D,
    body pose axis-angle (released) or 6D (paper), betas)."""
    from hmr_trt.export.seeded import ARM_DROP, standing_mean_params

    mean = standing_mean_params(22, 10)  # root + 21 body joints
    if params_dim != 79:
        return torch.from_numpy(np.concatenate([mean["pose"], mean["shape"]]))
    body = np.zeros((21, 3), np.float32)
    body[15, 2], body[16, 2] = -ARM_DROP, ARM_DROP  # SMPL joints 16, 17 (shoulders) about z: arms down
    return torch.from_numpy(np.concatenate([mean["pose"][:6], body.reshape(-1), mean["shape"]]))


@torch.no_grad()
def shape_like_trained(model: InstanceHMR, images: torch.Tensor) -> None:
    """Heads shaped like a trained network's, on the BN statistics ``seeded_init`` measured on the person
    mosaics ``images`` (still untrained: the center map stays the seeded one, so people are read wherever
    its peaks fall):

    - the parameter map starts from a standing person (``export.seeded.standing_mean_params``), each
      part (root, body pose, betas) moving with the image by ``PARAM_SPREAD`` x the SPIN-style
      regressors' standard deviations (``ROOT_STD``, ``POSE_STD``, ``SHAPE_STD``; one gain per part, so
      nearly constant channels are not blown up);
    - the camera map's scale starts at ``SCENE_SCALE`` (the sample video's people) with ``CAM_STD[0]``
      relative deltas, and its translation at each cell is that cell's own position in the input
      (as ROMP's camera puts the person on its center) plus ``CAM_STD`` deltas: the head's first conv
      carries the two coordinate channels (through BN and the BasicBlocks' skips) to the output conv.
    """
    from hmr_trt.export.seeded import CAM_STD, POSE_STD, ROOT_STD, SHAPE_STD, START_CAM

    cfg = model.cfg
    seen: Dict[str, torch.Tensor] = {}
    cam_head, params_conv = model.final_layers[2], model.params_outconv
    hooks = [params_conv.register_forward_hook(lambda mod, inp, out: seen.__setitem__("params", out)),
             cam_head[2].register_forward_hook(lambda mod, inp, out: seen.__setitem__("cam", out))]
    model.eval()
    # the camera head: coordinate channels (the last two of its input) carried on channels 0, 1
    first, bn = cam_head[0][0], cam_head[0][1]
    feat = first.weight.shape[1]
    first.weight[:2] = 0.0
    first.bias[:2] = 0.0
    first.weight[0, feat - 2, 1, 1] = 1.0  # column coordinate (the 3x3 kernel's centre tap)
    first.weight[1, feat - 1, 1, 1] = 1.0  # row coordinate
    bn.running_mean[:2] = 0.0
    bn.running_var[:2] = 1.0 - bn.eps
    bn.weight[:2] = 1.0
    bn.bias[:2] = CARRIER_OFFSET
    for block in cam_head[1]:
        block[0].bn2.weight[:2] = 0.0
        block[0].bn2.bias[:2] = 0.0
    last = cam_head[2]
    last.weight[:, :2] = 0.0
    model(images)
    out = seen["cam"].transpose(0, 1).flatten(1)  # (3, cells): the deltas, before the carrier is read
    # the crop camera's relative scale deltas; translation deltas in metres times the scale, as input units
    gain = torch.tensor([math.log1p(CAM_STD[0] / START_CAM[0]) / math.log(1.1), CAM_STD[1] * SCENE_SCALE,
                         CAM_STD[2] * SCENE_SCALE])
    last.weight.mul_((gain / out.std(dim=1).clamp_min(1e-12))[:, None, None, None])
    last.bias.copy_(torch.tensor([math.log(SCENE_SCALE) / math.log(1.1), -CARRIER_OFFSET, -CARRIER_OFFSET])
                    - (out.mean(dim=1) - last.bias) * gain / out.std(dim=1).clamp_min(1e-12))
    last.weight[1, 0, 0, 0] = 1.0
    last.weight[2, 1, 0, 0] = 1.0
    # the parameter map: a standing person with bounded deltas
    model(images)
    out = seen["params"].transpose(0, 1).flatten(1) - params_conv.bias[:, None]  # (P, cells), without the bias
    s = param_slices(cfg.params_dim)
    for part, target in (("global_orient", ROOT_STD), ("body_pose", POSE_STD), ("betas", SHAPE_STD)):
        gain = PARAM_SPREAD * target / out[s[part]].std(dim=1).mean().clamp_min(1e-12)
        params_conv.weight[s[part]] *= gain
        out[s[part]] *= gain
    params_conv.bias.copy_(_standing_params(cfg.params_dim) - out.mean(dim=1))
    for hook in hooks:
        hook.remove()
