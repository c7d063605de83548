"""The ResNet-50 image backbone shared by SPIN-style HMR regressors.

``ResNet50Backbone`` is torchvision's ``resnet50`` (v1.5: stride on the 3x3 conv) without the
``fc`` head: ``images (N, 3, H, W) -> features (N, 2048)``. Its state-dict keys are exactly
torchvision's minus ``fc.weight`` / ``fc.bias``, so torchvision and SPIN checkpoints load as they are.

Without a checkpoint, ``ResNet50Backbone.from_seed(seed)`` builds deterministic weights that give
well-scaled features in eval mode (see ``ResNet50Backbone.__init__``), for tests and parity runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from hmr_trt.errors import CheckpointError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Prefixes that wrappers put in front of the backbone's keys (DataParallel, Lightning, sub-modules).
_STRIP_PREFIXES = ("module.", "model.", "backbone.")
# Dict keys under which checkpoints nest their state dict (SPIN saves {"model": state_dict, ...}).
_NESTED_KEYS = ("model", "state_dict")
# BatchNorm statistics of seeded backbones, by seed (one train-mode pass on the person crops each).
_BN_STATS: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: 1x1 -> 3x3 (strided) -> 1x1, times 4 channels."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def resnet_layer(inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """torchvision's ``_make_layer``: ``blocks`` bottlenecks, the first strided with a 1x1 projection when the
    shape changes (state-dict keys ``0.conv1.weight``, ``0.downsample.0.weight``, ... as torchvision's).
    Every ResNet here (SPIN's backbone, DecoMR's CNet, the instance-aware network's) is built from it."""
    outplanes = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != outplanes:
        downsample = nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(outplanes))
    layers = [Bottleneck(inplanes, planes, stride, downsample)]
    layers += [Bottleneck(outplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ResNet50Backbone(nn.Module):
    """ResNet-50 feature extractor: ImageNet-normalised ``(N, 3, H, W)`` float32 -> ``(N, 2048)``."""

    def __init__(self, seed: int = 0, calibrate: bool = True):
        """Build the network with deterministic weights drawn from ``seed``.

        Convs get torchvision's init (kaiming normal, fan_out, relu) and BN gamma 1 / beta 0, drawn
        from a local ``torch.Generator``; the global RNG is not touched. With ``calibrate`` the BN
        running statistics are then set by one train-mode pass over real person crops of the sample
        video (``export.seeded.person_crops``, shipped with the package), so in eval mode every BN
        output is roughly unit-variance on people, as trained BatchNorm gives, and the pooled
        features are O(1) instead of exploding through 16 residual sums. ``calibrate=False`` skips that pass (running stats
        stay 0 / 1): use it when a checkpoint will overwrite every tensor anyway.
        """
        super().__init__()
        with torch.device("meta"):  # no allocation, no draw from the global RNG
            self._build()
        self.to_empty(device="cpu")
        self._init_weights(seed, calibrate)

    def _build(self) -> None:
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.inplanes = 64
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3 = self._make_layer(256, 6, stride=2)
        self.layer4 = self._make_layer(512, 3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layer = resnet_layer(self.inplanes, planes, blocks, stride)
        self.inplanes = planes * Bottleneck.expansion
        return layer

    @torch.no_grad()
    def _init_weights(self, seed: int, calibrate: bool) -> None:
        generator = torch.Generator().manual_seed(seed)
        bns = [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
        for bn in bns:
            nn.init.ones_(bn.weight)
            nn.init.zeros_(bn.bias)
            bn.reset_running_stats()
        if not calibrate:
            return
        cached = _BN_STATS.get(seed)
        if cached is None:
            from hmr_trt.runtime.crops import normalise_crops

            from .seeded import person_crops

            images = torch.from_numpy(normalise_crops(person_crops()))  # the sample video's people
            was_training = self.training
            momenta = [bn.momentum for bn in bns]
            for bn in bns:
                bn.momentum = None  # cumulative average: after one batch the running stats are its stats
            self.train()
            self(images)
            for bn, momentum in zip(bns, momenta):
                bn.momentum = momentum
            self.train(was_training)
            cached = _BN_STATS[seed] = [(bn.running_mean.clone(), bn.running_var.clone(),
                                         bn.num_batches_tracked.clone()) for bn in bns]
        for bn, (mean, var, count) in zip(bns, cached):  # the same pass, measured once per process
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.copy_(count)

    @classmethod
    def from_seed(cls, seed: int = 0) -> ResNet50Backbone:
        """Deterministic, calibrated weights from ``seed``; returned in eval mode."""
        return cls(seed=seed).eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))  # (N, 64, H/4, W/4)
        x = self.layer1(x)  # (N, 256, H/4, W/4)
        x = self.layer2(x)  # (N, 512, H/8, W/8)
        x = self.layer3(x)  # (N, 1024, H/16, W/16)
        x = self.layer4(x)  # (N, 2048, H/32, W/32)
        return torch.flatten(self.avgpool(x), 1)  # (N, 2048)


def smooth_images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Deterministic smooth random RGB images, ImageNet-normalised: float32 ``(batch, 3, height, width)``.

    Coarse uniform noise upsampled bilinearly, so neighbouring pixels correlate like in photos.
    """
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 6, 6, generator=generator)  # (N, 3, 6, 6) in [0, 1]
    rgb = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((rgb - mean) / std).contiguous()  # (N, 3, H, W)


def _preview(keys: Iterable[str], limit: int = 10) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown} ... and {len(keys) - limit} more"


def _strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _STRIP_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def _unwrap(state_dict: Any) -> Mapping[str, Any]:
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"checkpoint is a {type(state_dict).__name__}, expected a dict of tensors")
    for nested in _NESTED_KEYS:
        inner = state_dict.get(nested)
        if isinstance(inner, Mapping) and not any(isinstance(v, torch.Tensor) for v in state_dict.values()):
            return _unwrap(inner)
    return state_dict


def load_backbone_state_dict(model: ResNet50Backbone, state_dict: Mapping[str, Any]) -> list[str]:
    """Load backbone weights from a torchvision, SPIN or wrapped state dict; return the ignored keys.

    Accepts a plain state dict or one nested under ``"model"`` / ``"state_dict"`` (SPIN saves
    ``{"model": ...}``); strips ``module.`` / ``model.`` / ``backbone.`` prefixes. Keys that are not
    backbone keys (``fc.*``, SPIN's regressor ``fc1.*``, ``decpose.*``, ``init_pose`` ...) are ignored
    and returned, sorted, under their original names. ``num_batches_tracked`` may be absent (old
    torchvision files lack it; it does not affect eval outputs). Any other missing backbone key, a
    shape mismatch or a non-tensor value raises ``CheckpointError``.
    """
    source = _unwrap(state_dict)
    expected = model.state_dict()
    found: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    ignored: list[str] = []
    for key, value in source.items():
        name = _strip_prefixes(str(key))
        if name not in expected:
            ignored.append(str(key))
            continue
        if name in found:
            raise CheckpointError(
                f"checkpoint holds backbone key {name!r} twice: {origin[name]!r} and {key!r}"
            )
        found[name], origin[name] = value, str(key)

    missing = [k for k in expected if k not in found and not k.endswith("num_batches_tracked")]
    mismatched = []
    for name, value in found.items():
        if not isinstance(value, torch.Tensor):
            mismatched.append(f"{origin[name]} (a {type(value).__name__}, expected a tensor)")
        elif value.shape != expected[name].shape:
            mismatched.append(
                f"{origin[name]} (shape {tuple(value.shape)}, expected {tuple(expected[name].shape)})"
            )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing backbone keys: {_preview(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} mismatched: {_preview(mismatched)}")
    if problems:
        if ignored:
            problems.append(f"{len(ignored)} unexpected keys ignored: {_preview(ignored)}")
        raise CheckpointError("checkpoint does not match the ResNet-50 backbone; " + "; ".join(problems))
    model.load_state_dict(found, strict=False)  # strict checks done above
    return sorted(ignored)


def backbone_from_checkpoint(path: str | os.PathLike[str]) -> ResNet50Backbone:
    """Build a ``ResNet50Backbone`` from a torchvision or SPIN checkpoint file; returned in eval mode."""
    from .models.checkpoint import load_torch_file

    state_dict = load_torch_file(path, "backbone")  # weights only; what is wrong with the file, in words
    model = ResNet50Backbone(calibrate=False)
    load_backbone_state_dict(model, state_dict)
    return model.eval()
