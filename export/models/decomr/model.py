"""DecoMR in PyTorch: CNet (``DPNet``) and LNet (``UVNet``) with the official state-dict key names.

Data flow for one 224x224 crop (released config, shapes per crop):
  image (3, 224, 224) -> ResNet-50 -> codes (2048,) and features at 112/56/28/14/7 px
  -> CNet decoder: 3 x (nearest x2 + ConvBottleNeck, skip add) -> dp_feature (256, 56, 56)
  -> heads -> IUV image (3, 56, 56) = [foreground prob, u, v]
  -> LNet: foreground pixels' features (+ x, y) scattered to the 64x64 UV grid at round(uv * 63),
     cells averaged, plus an occupancy channel (259, 64, 64); concat fc_head(codes) (256) and the
     reference UV map (3) -> 1x1 convs -> hourglass -> ConvBottleNeck -> bilinear x2 -> UV location
     map (128, 128, 3); camera MLP on codes -> [s, tx, ty]
  -> vertices: grid_sample of the location map at every texture vertex (align_corners=True, as the
     official code ran under PyTorch 1.1), averaged per mesh vertex.

The image->UV scatter has three interchangeable forms (``DecomrConfig.scatter``): ``index_add`` (what
the official code does, eager only), ``scatter`` (every pixel weighted by its foreground mask,
``scatter_add`` -> ONNX ScatterElements with reduction=add) and ``dense`` (a one-hot matrix from an
equality against the cell ids, then a MatMul: no scatter at all).
"""

from __future__ import annotations

import copy
import math
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hmr_trt.export.backbone import Bottleneck, resnet_layer

from .config import DecomrConfig
from .uv_data import DecomrUVData

# shaped seeded weights (cfg.trained_like), by configuration and reference map: measured once per process
_SHAPED: dict = {}
FOREGROUND = 0.5  # IUV confidence above which a pixel is warped (strict >, as the official code)


# --- building blocks ---------------------------------------------------------------------------------

class ResNetBackbone(nn.Module):
    """ResNet-50 returning the pooled code and every level's features (``fc`` is in the checkpoint, unused)."""

    def __init__(self, layers: Tuple[int, ...], width: int):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # the official AvgPool2d(7) on the 7x7 map of a 224 crop
        self.fc = nn.Linear(32 * width, 1000)  # never used; kept so the released file loads strictly

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layer = resnet_layer(self.inplanes, planes, blocks, stride)
        self.inplanes = planes * Bottleneck.expansion
        return layer

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        x1 = self.relu(self.bn1(self.conv1(x)))  # (B, 64, 112, 112)
        x2 = self.layer1(self.maxpool(x1))  # (B, 256, 56, 56)
        x3 = self.layer2(x2)  # (B, 512, 28, 28)
        x4 = self.layer3(x3)  # (B, 1024, 14, 14)
        x5 = self.layer4(x4)  # (B, 2048, 7, 7)
        codes = self.avgpool(x5).flatten(1)  # (B, 2048)
        return codes, [x, x1, x2, x3, x4, x5]


class ConvBottleNeck(nn.Module):
    """1x1 -> 3x3 -> 1x1 convs with GroupNorm (8 channels a group), 1x1 skip conv when widths differ."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.in_channels, self.out_channels = in_channels, out_channels
        self.conv1 = nn.Conv2d(in_channels, mid, 1)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1)
        self.conv3 = nn.Conv2d(mid, out_channels, 1)
        self.norm1 = nn.GroupNorm(mid // 8, mid)
        self.norm2 = nn.GroupNorm(mid // 8, mid)
        self.norm3 = nn.GroupNorm(out_channels // 8, out_channels)
        if in_channels != out_channels:
            self.skip_conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        residual = self.skip_conv(x) if self.in_channels != self.out_channels else x
        return F.relu(y + residual)


class HgNet(nn.Module):
    """Hourglass: ``level`` x (ConvBottleNeck doubling width + maxpool), back up with nearest x2 + skips."""

    def __init__(self, in_channels: int, level: int):
        super().__init__()
        self.norm = nn.GroupNorm(in_channels // 8, in_channels)
        down, up = [], []
        for _ in range(level):
            out = in_channels * 2
            down.append(nn.Sequential(ConvBottleNeck(in_channels, out), nn.MaxPool2d(2, 2)))
            up.append(nn.Sequential(nn.Upsample(scale_factor=2), ConvBottleNeck(out, in_channels)))
            in_channels = out
        self.down_layers = nn.ModuleList(down)
        self.up_layers = nn.ModuleList(up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for layer in self.down_layers:
            skips.append(x)
            x = layer(x)
        for i in range(len(self.up_layers) - 1, -1, -1):
            x = self.up_layers[i](x) + skips[i]
        return self.norm(x)


# --- CNet: image -> IUV image ---------------------------------------------------------------------------

class DPNet(nn.Module):
    def __init__(self, cfg: DecomrConfig):
        super().__init__()
        ch = cfg.channels
        self.resnet = ResNetBackbone(cfg.resnet_layers, cfg.resnet_width)
        self.dp_layers = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2), ConvBottleNeck(ch[i + 1], ch[i])) for i in range(cfg.warp_level, 5))
        self.dp_uv_end = nn.Sequential(ConvBottleNeck(ch[cfg.warp_level], 32), nn.Conv2d(32, 2, 1), nn.Sigmoid())
        self.dp_mask_end = nn.Sequential(ConvBottleNeck(ch[cfg.warp_level], 32), nn.Conv2d(32, 1, 1), nn.Sigmoid())

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        codes, features = self.resnet(image)
        x = features[-1]
        for i in range(len(self.dp_layers) - 1, -1, -1):  # 7 -> 14 -> 28 -> 56 px, skip-add ResNet features
            x = self.dp_layers[i](x) + features[i + len(features) - 1 - len(self.dp_layers)]
        dp_out = torch.cat([self.dp_mask_end(x), self.dp_uv_end(x)], dim=1)  # (B, 3, 56, 56): mask, u, v
        return dp_out, x, codes  # x: dp_feature (B, 256, 56, 56)


# --- LNet: IUV image + features -> UV location map, camera ----------------------------------------------

def warp_feature(dp_out: torch.Tensor, feature: torch.Tensor, res: int, form: str,
                 decide_from: torch.Tensor | None = None) -> torch.Tensor:
    """Scatter foreground pixels' features into a res x res UV grid: (B, C, H, W) -> (B, C + 3, res, res).

    Channels: the mean of the pixels' features and their x, y in [-1, 1] per cell, then ``count > 0``.
    ``decide_from``: another IUV image (B, 3, H, W) from which the discrete decisions (foreground test,
    UV cell) are taken instead of ``dp_out``'s: FP32 parity pins the export's decisions this way."""
    b, c, h, w = feature.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=feature.device), torch.arange(w, device=feature.device),
                            indexing="ij")
    coords = torch.stack([2 * xs.float() / (w - 1) - 1, 2 * ys.float() / (h - 1) - 1]).reshape(2, h * w)
    pixels = torch.cat([feature.reshape(b, c, h * w), coords.expand(b, 2, h * w)], dim=1)  # (B, C+2, HW)
    pixels = pixels.transpose(1, 2)  # (B, HW, C+2)
    iuv = dp_out if decide_from is None else decide_from
    uv = (iuv[:, 1:].reshape(b, 2, h * w).transpose(1, 2) * (res - 1)).round().long().clamp(0, res - 1)
    cell = uv[..., 1] * res + uv[..., 0]  # (B, HW): row v, column u
    foreground = iuv[:, 0].reshape(b, h * w) > FOREGROUND  # (B, HW)
    ones = torch.ones_like(pixels[..., :1])
    if form == "index_add":  # the official algorithm: select the foreground pixels, then index_add_
        flat_cell = (cell + torch.arange(b, device=cell.device)[:, None] * res * res)[foreground]
        sums = pixels.new_zeros(b * res * res, c + 2).index_add_(0, flat_cell, pixels[foreground])
        count = pixels.new_zeros(b * res * res, 1).index_add_(0, flat_cell, ones[foreground])
        sums, count = sums.reshape(b, res * res, c + 2), count.reshape(b, res * res, 1)
    else:
        weighted = torch.cat([pixels, ones], dim=-1) * foreground[..., None].float()  # (B, HW, C+3)
        if form == "scatter":
            index = cell[..., None].expand(-1, -1, c + 3)
            acc = weighted.new_zeros(b, res * res, c + 3).scatter_add(1, index, weighted)
        else:  # dense: one-hot (B, HW, R*R) by equality, then a batched MatMul
            cells = torch.arange(res * res, device=cell.device)
            onehot = (cell[..., None] == cells).float()
            acc = torch.matmul(onehot.transpose(1, 2), weighted)  # (B, R*R, C+3)
        sums, count = acc[..., :-1], acc[..., -1:]
    # the official sums / (count + 1e-8): in float32 count + 1e-8 == count for count >= 1, and empty cells
    # hold sums of 0, so dividing by max(count, 1) is the same to the bit, and stays finite in FP16
    warped = torch.cat([sums / count.clamp(min=1.0), (count > 0).float()], dim=-1)  # (B, R*R, C+3)
    return warped.reshape(b, res, res, c + 3).permute(0, 3, 1, 2)


class UVNet(nn.Module):
    def __init__(self, cfg: DecomrConfig, ref_map: np.ndarray):
        super().__init__()
        self.cfg = cfg
        warp_channel = cfg.channels[cfg.warp_level]
        code_dim = cfg.channels[-1]
        self.warp_res = cfg.warp_res
        self.fc_head = nn.Sequential(nn.Linear(code_dim, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                     nn.Linear(512, cfg.global_dim))
        self.camera = nn.Sequential(nn.Linear(code_dim, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                    nn.Linear(512, 256), nn.BatchNorm1d(256), nn.LeakyReLU(0.2),
                                    nn.Linear(256, 3))
        # not in the official state dict (a plain attribute there): a non-persistent buffer here
        self.register_buffer("ref_map", torch.from_numpy(ref_map).permute(2, 0, 1)[None].contiguous(),
                             persistent=False)  # (1, 3, R, R)
        self.uv_conv1 = nn.Sequential(
            nn.Conv2d(cfg.global_dim + warp_channel + 3 + 3, 2 * warp_channel, 1), nn.ReLU(),
            nn.Conv2d(2 * warp_channel, 2 * warp_channel, 1), nn.ReLU(),
            nn.Conv2d(2 * warp_channel, warp_channel, 1))
        uv_lv = 0 if cfg.uv_res == 256 else 1
        self.hg = HgNet(warp_channel, level=5 - cfg.warp_level)
        prev = min(8, 2 ** (cfg.warp_level - uv_lv))
        self.uv_conv2 = ConvBottleNeck(warp_channel, cfg.uv_channels * prev)
        layers = []
        for lv in range(cfg.warp_level, uv_lv, -1):  # bilinear x2 up to uv_res
            cur = min(prev, 2 ** (lv - uv_lv - 1))
            layers.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                        ConvBottleNeck(cfg.uv_channels * prev, cfg.uv_channels * cur)))
            prev = cur
        self.decoder = nn.Sequential(*layers)
        self.uv_end = nn.Sequential(ConvBottleNeck(cfg.uv_channels, 32), nn.Conv2d(32, 3, 1))

    def forward(self, dp_out: torch.Tensor, dp_feature: torch.Tensor, codes: torch.Tensor,
                form: str, decide_from: torch.Tensor | None = None) -> Tuple[torch.Tensor, torch.Tensor]:
        b, r = dp_out.shape[0], self.warp_res
        local = warp_feature(dp_out, dp_feature, r, form, decide_from)  # (B, C+3, 64, 64)
        glob = self.fc_head(codes)[:, :, None, None].expand(-1, -1, r, r)  # (B, 256, 64, 64)
        x = torch.cat([local, glob, self.ref_map.expand(b, -1, -1, -1)], dim=1)
        x = self.uv_end(self.decoder(self.uv_conv2(self.hg(self.uv_conv1(x)))))  # (B, 3, 128, 128)
        return x.permute(0, 2, 3, 1), self.camera(codes)  # uv_map (B, 128, 128, 3), cam (B, 3)


# --- the whole model -----------------------------------------------------------------------------------

class DecoMR(nn.Module):
    """images (B, 3, 224, 224), ImageNet-normalised -> vertices (B, V, 3), cam (B, 3) [s, tx, ty]."""

    def __init__(self, cfg: DecomrConfig, uv: DecomrUVData):
        super().__init__()
        self.cfg = cfg
        self.CNet = DPNet(cfg)
        self.LNet = UVNet(cfg, uv.ref_map)
        # the resampler (official Index_UV_Generator.resample); static, derived from the UV data
        self.register_buffer("texcoords", torch.from_numpy(uv.texcoords * 2 - 1)[None, None], persistent=False)
        self.register_buffer("vt2v", torch.from_numpy(uv.vt2v), persistent=False)
        self.register_buffer("vt_count", torch.from_numpy(uv.vt_count)[None, :, None], persistent=False)
        self.register_buffer("vertex_table", torch.from_numpy(uv.vertex_table()), persistent=False)  # (V, K)
        self.initialise(torch.Generator().manual_seed(cfg.seed))

    @torch.no_grad()
    def initialise(self, gen: torch.Generator) -> None:
        """Seeded untrained weights whose IUV image covers the UV grid and whose mesh moves with the input."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.01)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)):
                m.weight.fill_(1.0)
                m.bias.zero_()
        for m in self.CNet.resnet.modules():  # damp residual branches so 16 blocks do not explode
            if isinstance(m, Bottleneck):
                m.bn3.weight.fill_(0.2)
        g = self.cfg.head_gain
        # IUV heads: standardise their logits on one seeded noise crop, then gain g, so that about half
        # the pixels are foreground and u, v cover the UV grid (raw logits sit far below zero)
        heads = (self.CNet.dp_mask_end[1], self.CNet.dp_uv_end[1])
        logits = {}
        hooks = [h.register_forward_hook(lambda mod, inp, out: logits.__setitem__(mod, out)) for h in heads]
        self.CNet.eval()(torch.randn(1, 3, self.cfg.img_res, self.cfg.img_res, generator=gen))
        for hook in hooks:
            hook.remove()
        for head in heads:
            mean, std = logits[head].mean(dim=(0, 2, 3)), logits[head].std(dim=(0, 2, 3))
            head.weight.mul_((g / std)[:, None, None, None])
            head.bias.copy_((head.bias - mean) * g / std)
        self.LNet.uv_end[1].weight.mul_(g / 16)  # location map (vertices) of about a metre
        self.LNet.camera[-1].weight.mul_(0.1)
        if self.cfg.trained_like:
            key = (tuple(sorted((k, str(v)) for k, v in self.cfg.to_dict().items() if k != "scatter")),
                   self.LNet.ref_map.numpy().tobytes())
            if key not in _SHAPED:  # measured once per configuration and process (minutes for the full one)
                shape_like_trained(self, gen)
                _SHAPED[key] = {k: v.clone() for k, v in self.state_dict().items()}
            self.load_state_dict(_SHAPED[key])

    def with_scatter(self, form: str) -> DecoMR:
        """The same module (shared weights) computing the image->UV scatter as ``form``."""
        other = copy.copy(self)
        object.__setattr__(other, "cfg", self.cfg.__class__.from_dict({**self.cfg.to_dict(), "scatter": form}))
        return other

    def resample(self, uv_map: torch.Tensor) -> torch.Tensor:
        """UV location map (B, H, W, 3) -> vertices (B, V, 3): bilinear at every texture vertex, then the
        mean over each vertex's texture vertices."""
        b = uv_map.shape[0]
        grid = self.texcoords.expand(b, -1, -1, -1)  # (B, 1, NVT, 2)
        vt = F.grid_sample(uv_map.permute(0, 3, 1, 2), grid, mode="bilinear", align_corners=True)
        vt = vt[:, :, 0].transpose(1, 2)  # (B, NVT, 3)
        if self.cfg.scatter == "index_add":  # as the official code
            v = vt.new_zeros(b, self.vt_count.shape[1], 3).index_add_(1, self.vt2v, vt)
        else:  # static gather over the padded (V, K) table; the pad row is zero
            vt = torch.cat([vt, vt.new_zeros(b, 1, 3)], dim=1)
            v = vt[:, self.vertex_table].sum(dim=2)  # (B, V, K, 3) -> (B, V, 3)
        return v / self.vt_count

    def forward(self, images: torch.Tensor, decide_from: torch.Tensor | None = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """``decide_from``: an IUV image (B, 3, 56, 56) whose foreground/UV-cell decisions replace this
        model's own (every continuous value is still this model's); None: the model as released."""
        dp_out, dp_feature, codes = self.CNet(images)
        uv_map, cam = self.LNet(dp_out, dp_feature, codes, self.cfg.scatter, decide_from)
        return self.resample(uv_map), cam

    def iuv(self, images: torch.Tensor) -> torch.Tensor:
        """The IUV image (B, 3, 56, 56) = [foreground prob, u, v] the decisions are taken from."""
        return self.CNet(images)[0]


# --- seeded weights shaped like a trained network (cfg.trained_like) -----------------------------------------

DELTA_SPREAD_MM = 70.0  # RMS motion of each vertex across the sample video's people (parity asks >= 50 mm)
HINGES = 16  # smooth image-dependent deformations of the reference mesh
HINGE_SHIFT = 0.15  # m: std, across people, of how far each deformation's hinge plane moves
LOCAL_STD = 0.005  # m: what each of LNet's five residual stages adds to the location map from its own features
CARRIER_MARGIN = 0.3  # m: each carried coordinate stays this far above zero through LNet's ReLUs
UPRIGHT = (1.0, -1.0, -1.0)  # the reference mesh (y up, facing +z) half a turn about x: the crop camera's y down
CNET_CROPS, LNET_CROPS = 16, 6  # person crops the calibration runs CNet / LNet on (LNet is the costly half)


def _pass_through(block: ConvBottleNeck, n: int = 3) -> None:
    """Channels 0..n-1 of ``block``'s output: those of its input (identity or 1x1 skip) plus its residual
    branch at ``LOCAL_STD`` (GroupNorm-standardised, so about that many metres)."""
    block.norm3.weight[:n] = LOCAL_STD
    block.norm3.bias[:n] = 0.0
    if block.in_channels != block.out_channels:
        block.skip_conv.weight[:n] = 0.0
        block.skip_conv.bias[:n] = 0.0
        for k in range(n):
            block.skip_conv.weight[k, k, 0, 0] = 1.0


@torch.no_grad()
def shape_like_trained(model: DecoMR, gen: torch.Generator) -> None:
    """Seeded DecoMR weights that behave like a trained network's (still untrained):

    - CNet's ResNet BatchNorm statistics from one pass over the sample video's person crops
      (``export.seeded.person_crops``), the IUV heads standardised on those crops (about half of a
      person crop's pixels foreground, u, v over the grid), the BatchNorm1d of ``fc_head`` and the camera
      MLP measured on their codes;
    - the camera starts from the one that fills the crop (scale ``START_CAM[0]``, centred) with the
      SPIN-style regressors' small deltas (``CAM_STD``) on people;
    - the location map starts from the mesh DecoMR is given (its reference map, ``LNet.ref_map``, an
      input of LNet), turned upright for the crop camera and centred: channels 0-2 carry it through
      LNet's 1x1 convs, the hourglass's outer skip and every ConvBottleNeck's skip to the output conv;
      each residual stage on the way (the hourglass's outer level, ``uv_conv2``, the decoder, ``uv_end``)
      adds its own features at ``LOCAL_STD``, so the warped image features and every stage count; on
      top, ``HINGES`` smooth deformations ReLU(d . (ref - p) + e . glob) - ReLU(d . (ref - p)), each a
      bend across a plane through the body whose place moves with the person's global code (zero for the
      mean code), scaled so that vertices move ``DELTA_SPREAD_MM`` (RMS) across the person crops.
    """
    from hmr_trt.export.seeded import CAM_STD, START_CAM, calibrate_batchnorm, person_crops, shape_linear_head
    from hmr_trt.mesh import motion_spread_mm
    from hmr_trt.runtime.crops import normalise_crops

    cfg, cnet, lnet = model.cfg, model.CNet, model.LNet
    images = torch.from_numpy(normalise_crops(person_crops(cfg.img_res)))
    images = images[::max(1, len(images) // CNET_CROPS)]
    calibrate_batchnorm(cnet, [m for m in cnet.resnet.modules() if isinstance(m, nn.BatchNorm2d)],
                        lambda: cnet.resnet(images))
    heads = (cnet.dp_mask_end[1], cnet.dp_uv_end[1])
    logits = {}
    hooks = [h.register_forward_hook(lambda mod, inp, out: logits.__setitem__(mod, out)) for h in heads]
    _, dp_feature, codes = cnet.eval()(images)
    for hook in hooks:
        hook.remove()
    for head in heads:
        mean, std = logits[head].mean(dim=(0, 2, 3)), logits[head].std(dim=(0, 2, 3))
        head.weight.mul_((cfg.head_gain / std)[:, None, None, None])
        head.bias.copy_((head.bias - mean) * cfg.head_gain / std)
    calibrate_batchnorm(lnet, [m for m in lnet.modules() if isinstance(m, nn.BatchNorm1d)],
                        lambda: (lnet.fc_head(codes), lnet.camera(codes)))
    lnet.eval()
    shape_linear_head(lnet.camera[-1], lnet.camera(codes), (START_CAM[0], 0.0, 0.0), CAM_STD)

    # the location map: the reference mesh carried through LNet, plus the hinge deformations
    w, g, h = cfg.channels[cfg.warp_level], cfg.global_dim, HINGES
    ref = lnet.ref_map[0].flatten(1)  # (3, R*R)
    lo, hi = ref.min(dim=1).values, ref.max(dim=1).values
    off, centre = CARRIER_MARGIN - lo, (lo + hi) / 2
    ref_cols = w + 3 + g + torch.arange(3)  # conv input: warped features (w + 3), global code (g), reference (3)
    glob_cols = slice(w + 3, w + 3 + g)
    a, b, c = lnet.uv_conv1[0], lnet.uv_conv1[2], lnet.uv_conv1[4]
    wa, wb, wc = (conv.weight[:, :, 0, 0] for conv in (a, b, c))  # 1x1 convs: (out, in) views
    for conv in (a, b, c):
        conv.weight[:3] = 0.0
        conv.bias[:3] = 0.0
    for k in range(3):
        wa[k, ref_cols[k]] = 1.0
        wb[k, k] = 1.0
        wc[k, k] = 1.0
    a.bias[:3] = off
    # into the hourglass centred, and mirrored on channels 3-5: its last GroupNorm's group 0 (channels 0-7)
    # then has mean ~0, where ONNX Runtime's float32 statistics are accurate (about 1e-4 off at this mean)
    c.weight[3:8] = 0.0
    for k in range(3):
        wc[3 + k, k] = -1.0
    c.bias[:3] = -(off + centre)
    c.bias[3:6] = off + centre
    c.bias[6:8] = 0.0
    few = slice(0, None, max(1, len(images) // LNET_CROPS))
    dp_out, codes = cnet(images[few])[0], codes[few]  # the IUV image with the heads just shaped
    glob = lnet.fc_head(codes)  # (N, g)
    dirs = torch.randn(h, 3, generator=gen)
    dirs /= dirs.norm(dim=1, keepdim=True)
    points = ref[:, torch.randint(ref.shape[1], (h,), generator=gen)].t()  # (h, 3): planes through the body
    e = torch.randn(h, g, generator=gen)
    shift = glob @ e.t()  # (N, h)
    e *= (HINGE_SHIFT / shift.std(dim=0).clamp_min(1e-12))[:, None]
    for j in range(h):  # rows 3+j: ReLU(d.(ref - p) + e.(glob - mean)); rows 3+h+j: ReLU(d.(ref - p))
        for row, code in ((3 + j, e[j]), (3 + h + j, None)):
            wa[row] = 0.0
            wa[row, ref_cols] = dirs[j]
            a.bias[row] = -(dirs[j] @ points[j])
            if code is not None:
                wa[row, glob_cols] = code
                a.bias[row] -= code @ glob.mean(dim=0)
    up = lnet.hg.up_layers[0][1]  # the outer hourglass level adds to the skip: LOCAL_STD on 0-2, 0 on 3-7
    up.norm3.weight[:8] = 0.0
    up.norm3.bias[:8] = 0.0
    up.norm3.weight[:3] = LOCAL_STD
    up.skip_conv.weight[:8] = 0.0
    up.skip_conv.bias[:8] = 0.0
    for block in (lnet.uv_conv2, *(layer[1] for layer in lnet.decoder), lnet.uv_end[0]):
        _pass_through(block)
    end = lnet.uv_end[1]
    end.weight.zero_()
    for k in range(3):
        end.weight[k, k, 0, 0] = UPRIGHT[k]
    end.bias.copy_(-torch.tensor(UPRIGHT) * (off + centre))

    seen = {}
    hook = lnet.hg.norm.register_forward_pre_hook(lambda mod, args: seen.__setitem__("x", args[0]))
    r = lnet.warp_res
    lnet_in = torch.cat([warp_feature(dp_out, dp_feature[few], r, cfg.scatter),
                         glob[:, :, None, None].expand(-1, -1, r, r), lnet.ref_map.expand(len(glob), -1, -1, -1)], 1)

    def vertices() -> torch.Tensor:
        """LNet (as ``UVNet.forward``) on the calibration crops, the hourglass's last GroupNorm handing
        channels 0-2 on as they enter (its statistics of their group on these crops, averaged)."""
        lnet.hg(lnet.uv_conv1(lnet_in))
        group = seen["x"][:, :8].flatten(1)
        mean, var = group.mean(dim=1).mean(), group.var(dim=1, unbiased=False).mean()
        lnet.hg.norm.weight[:8] = 0.0
        lnet.hg.norm.bias[:8] = 0.0
        lnet.hg.norm.weight[:3] = (var + lnet.hg.norm.eps).sqrt()
        lnet.hg.norm.bias[:3] = mean + off + centre  # back to positive for the ReLUs after it
        uv_map = lnet.uv_end(lnet.decoder(lnet.uv_conv2(lnet.hg.norm(seen["x"]))))
        return model.resample(uv_map.permute(0, 2, 3, 1))

    mix = torch.randn(3, h, generator=gen) / math.sqrt(h)
    wb[:3, 3:3 + h] = mix
    wb[:3, 3 + h:3 + 2 * h] = -mix
    try:
        for _ in range(2):  # the deltas are linear in ``mix``; a second round settles the GroupNorm's share
            gain = DELTA_SPREAD_MM / max(motion_spread_mm(vertices().numpy()), 1e-6)
            wb[:3, 3:3 + 2 * h] *= gain
        vertices()  # the GroupNorm's statistics with the final deltas
    finally:
        hook.remove()
