"""Seeded (untrained) default weights shaped like trained ones.

Without a checkpoint every model runs on weights drawn from a seed. Drawn naively they give
contorted meshes and meaningless cameras, and their numerics are far from a trained network's. Here
they are shaped the way trained networks behave, while staying untrained (every caption, manifest
and note still says so):

- the backbone's BatchNorm statistics are measured on real person crops of the sample video
  (``person_crops``, a PNG strip made by tools/make_seeded_data.py), so activations have the
  ranges trained BatchNorm gives;
- SPIN-style iterative regressors start from a standing person, zero shape and the camera that puts
  the mesh in the crop (``standing_mean_params``, as SPIN's ``smpl_mean_params.npz`` does for a
  trained one), and their heads are scaled so that on features like the seeded backbone's on people
  (``feature_stats``, same tool) each output moves by a small, fixed standard deviation around that
  start (``shape_regressor``): people in slightly varying poses, placed on the person by the camera.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from hmr_trt.errors import ConfigError

CROPS_FILE = "seeded_crops.png"
FEATURES_FILE = "seeded_features.npz"
_HERE = Path(__file__).resolve().parent
CROP_STORE = 112  # side of one crop in the strip

# Standard deviation of each regressor output around its start on trained-like features: 6D pose
# components (the root turns less than the limbs), shape coefficients, camera (s, tx, ty).
ROOT_STD, POSE_STD, SHAPE_STD = 0.04, 0.09, 0.2
CAM_STD = (0.02, 0.015, 0.015)
# The start camera: SPIN's mean scale; ty centres the standing figure (head ~0.7 m above the pelvis,
# feet ~0.93 m below) in the crop.
START_CAM = (0.9, 0.0, -0.1)
ARM_DROP = math.radians(75.0)  # shoulders turned down from the T-pose: arms at the sides


def _missing(name: str) -> ConfigError:
    return ConfigError(f"seeded weights: {_HERE / name} is missing (regenerate it: "
                       f".venv/bin/python tools/make_seeded_data.py)")


@lru_cache(maxsize=4)
def person_crops(size: int = 224) -> np.ndarray:
    """uint8 (N, size, size, 3) RGB: the sample video's hand-labelled people, cropped as the runtime crops them."""
    import cv2

    path = _HERE / CROPS_FILE
    strip = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if strip is None:
        raise _missing(CROPS_FILE)
    n = strip.shape[1] // CROP_STORE
    crops = [strip[:, i * CROP_STORE:(i + 1) * CROP_STORE, ::-1] for i in range(n)]
    crops = [cv2.resize(np.ascontiguousarray(c), (size, size), interpolation=cv2.INTER_LINEAR) for c in crops]
    out = np.stack(crops)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=8)
def feature_stats(dim: int = 2048) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (dim,) of the seeded backbone's features on ``person_crops`` (tiled
    or cut to ``dim`` for smaller test configs)."""
    path = _HERE / FEATURES_FILE
    if not path.is_file():
        raise _missing(FEATURES_FILE)
    with np.load(path, allow_pickle=False) as data:
        mean, std = np.asarray(data["mean"], np.float32), np.asarray(data["std"], np.float32)
    return np.resize(mean, dim), np.resize(std, dim)


def trained_like_features(gen: torch.Generator, batch: int, frames: int, dim: int) -> torch.Tensor:
    """(batch, frames, dim) non-negative features with the seeded backbone's per-channel statistics on
    people: each window a person (a draw around the mean), frames drifting a little within it."""
    mean, std = (torch.from_numpy(a.copy()) for a in feature_stats(dim))
    person = torch.randn(batch, 1, dim, generator=gen)
    frame = torch.randn(batch, frames, dim, generator=gen) * 0.3
    return (mean + std * (person + frame)).clamp_min(0.0)


def _rotmat_6d(r: np.ndarray) -> np.ndarray:
    return r[:, :2].reshape(-1)  # the (3, 2) first two columns, row-major (SPIN's layout)


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis].astype(np.float64)


def standing_mean_params(num_joints: int = 24, num_betas: int = 10) -> Dict[str, np.ndarray]:
    """A standing person facing the camera, arms at the sides, zero shape, the camera that fills the crop.

    The root turns half a turn about x (SMPL is y-up, the crop camera y-down, as in SPIN's mean
    pose); the shoulders (SMPL joints 16, 17) turn the arms down from the T-pose.
    """
    rots = [np.eye(3) for _ in range(num_joints)]
    rots[0] = _rot("x", math.pi)
    if num_joints > 17:
        rots[16], rots[17] = _rot("z", -ARM_DROP), _rot("z", ARM_DROP)
    pose = np.concatenate([_rotmat_6d(r) for r in rots]).astype(np.float32)
    return {"pose": pose, "shape": np.zeros(num_betas, np.float32), "cam": np.array(START_CAM, np.float32)}


def _targets(pose_dim: int, num_betas: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pose = torch.full((pose_dim,), POSE_STD)
    pose[:6] = ROOT_STD
    return pose, torch.full((num_betas,), SHAPE_STD), torch.tensor(CAM_STD)


@torch.no_grad()
def _calls(model: nn.Module, module: nn.Module, run: Callable[[], object]) -> list:
    """The positional arguments of every call of ``module`` while ``run()`` drives ``model`` (in eval mode)."""
    seen = []
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(tuple(a.detach().clone() for a in args)))
    was_training = model.training
    model.eval()
    try:
        run()
    finally:
        handle.remove()
        model.train(was_training)
    return seen


def regressor_inputs(model: nn.Module, regressor: nn.Module, run: Callable[[], object]) -> torch.Tensor:
    """What ``regressor`` reads (its first argument, (N, C)) while ``run()`` drives ``model``."""
    return torch.cat([args[0].reshape(-1, args[0].shape[-1]) for args in _calls(model, regressor, run)])


@torch.no_grad()
def shape_regressor(regressor: nn.Module, inputs: torch.Tensor, rounds: int = 6) -> None:
    """Start ``regressor`` (spin.Regressor) from ``standing_mean_params`` and scale each row of its
    heads so that, over ``inputs`` (N, C), every output's mean is the start and its std the target.

    The regressor is affine in its inputs (no activation between fc1, fc2 and the heads), so a few
    rounds of rescaling rows and re-centring biases converge; the feedback through fc1 is why one
    round is not exact.
    """
    pose_dim, betas = regressor.init_pose.shape[1], regressor.init_shape.shape[1]
    mean = standing_mean_params(pose_dim // 6, betas)
    regressor.init_pose.copy_(torch.from_numpy(mean["pose"])[None])
    regressor.init_shape.copy_(torch.from_numpy(mean["shape"])[None])
    regressor.init_cam.copy_(torch.from_numpy(mean["cam"])[None])
    heads = (regressor.decpose, regressor.decshape, regressor.deccam)
    starts = (regressor.init_pose[0], regressor.init_shape[0], regressor.init_cam[0])
    was_training = regressor.training
    regressor.eval()
    for head in heads:
        head.bias.zero_()
    for _ in range(rounds):
        for head, out, start, target in zip(heads, regressor(inputs), starts, _targets(pose_dim, betas)):
            std = out.std(dim=0).clamp_min(1e-12)
            head.weight.mul_((target / std)[:, None])
            head.bias.sub_((out.mean(dim=0) - start) / max(regressor.iters, 1))
    regressor.train(was_training)


def shape_like_trained(model: nn.Module, regressor: nn.Module, window: int, feature_dim: int,
                       seed: int, windows: int = 12) -> None:
    """``shape_regressor`` on what ``regressor`` reads when ``model`` (features (B, T, C) in) runs on
    ``windows`` trained-like feature windows drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed + 7919)
    features = trained_like_features(gen, windows, window, feature_dim)
    shape_regressor(regressor, regressor_inputs(model, regressor, lambda: model(features)))


@torch.no_grad()
def shape_refiner(refiner: nn.Module, heads: Sequence[Tuple[nn.Linear, slice, int]], inputs: Tuple[torch.Tensor, ...],
                  rounds: int = 6) -> None:
    """Scale the ``heads`` of a one-pass refiner (GLoT's HSCR: output = head(...) + its start input)
    so that over ``inputs`` (its arguments) each head's delta has mean 0 and the target std.
    ``heads``: (linear, the slice of output ``k`` it writes, k) with k 0 pose, 1 shape, 2 cam."""
    targets = _targets(inputs[1].shape[-1], inputs[2].shape[-1])
    was_training = refiner.training
    refiner.eval()
    for _ in range(rounds):
        outs = refiner(*inputs)
        for head, cols, k in heads:
            delta = (outs[k] - inputs[1 + k]).reshape(-1, outs[k].shape[-1])[:, cols]
            std = delta.std(dim=0).clamp_min(1e-12)
            head.weight.mul_((targets[k][cols] / std)[:, None])
            head.bias.sub_(delta.mean(dim=0) * targets[k][cols] / std)
    refiner.train(was_training)


def module_arguments(model: nn.Module, module: nn.Module, run: Callable[[], object]) -> Tuple[torch.Tensor, ...]:
    """The positional arguments ``module`` receives (the last call) while ``run()`` drives ``model``."""
    return _calls(model, module, run)[-1]


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, bns: Sequence[nn.modules.batchnorm._BatchNorm], run: Callable[[], object]) -> None:
    """Set the running statistics of ``bns`` to those of one train-mode pass ``run()`` over ``model``
    (every other module in eval mode), as ``ResNet50Backbone`` does on ``person_crops``."""
    was_training = model.training
    model.eval()
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: after one batch the running stats are its stats
        bn.train()
    try:
        run()
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.train(was_training)


@torch.no_grad()
def shape_linear_head(head: nn.Linear, outputs: torch.Tensor, start: Sequence[float], std: Sequence[float]) -> None:
    """Scale the rows of ``head`` (whose outputs over some inputs were ``outputs`` (N, K)) so that each
    output's std is ``std`` and its mean ``start``: a camera head starting at the crop camera."""
    spread = outputs.std(dim=0).clamp_min(1e-12)
    gain = torch.as_tensor(std, dtype=outputs.dtype) / spread
    head.weight.mul_(gain[:, None])
    head.bias.copy_(torch.as_tensor(start, dtype=outputs.dtype) - (outputs.mean(dim=0) - head.bias) * gain)


def person_mosaics(size: int, across: int, count: int) -> np.ndarray:
    """uint8 (count, size, size, 3) RGB: ``person_crops`` tiled ``across`` x ``across`` (mosaic k starts at
    crop k * across**2, cycling), so that a whole-image network sees people about as tall as in the video."""
    import cv2

    cell = size // across
    crops = person_crops(CROP_STORE)
    out = np.zeros((count, size, size, 3), np.uint8)
    for k in range(count):
        for i in range(across * across):
            crop = cv2.resize(np.ascontiguousarray(crops[(k * across * across + i) % len(crops)]), (cell, cell),
                              interpolation=cv2.INTER_AREA)
            r, c = divmod(i, across)
            out[k, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = crop
    return out
