"""The torch reference of the host post-processing, following the released code step by step
(``CenterMap.parse_centermap_heatmap_adaptive_scale_batch``, ``ResultParser.parameter_sampling``,
``SMPLWrapper`` and the orthographic branch of ``vertices_kp3d_projection``). ``runtime/scene.py`` is
the torch-free version that the runtime uses; tests compare the two.

Not reproduced: the released parser's fallback that, when no image of the batch has a center above
the threshold, takes every image's best peak anyway (flagged ``detection_flag=False``); a deployment
reports no people instead.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from ..spin import rot6d_to_rotmat
from .model import param_slices


def centers_from_map(center_map: torch.Tensor, conf_thresh: float, max_person: int = 64):
    """center_map (B, 1, M, M) -> batch ids (N,), flat indices (N,), (y, x) (N, 2), scores (N,)."""
    pooled = F.max_pool2d(center_map, 5, 1, 2)
    nms = center_map * torch.eq(pooled, center_map).float()  # keep local maxima only
    b, c, h, w = nms.shape
    scores, inds = torch.topk(nms.reshape(b, c, -1), max_person)  # (B, 1, K)
    inds = inds % (h * w)
    score, order = torch.topk(scores.reshape(b, -1), max_person)  # (B, K), over channels (one here)
    inds = torch.gather(inds.reshape(b, -1), 1, order)
    mask = score > conf_thresh
    batch_ids = torch.where(mask)[0]
    flat = inds[mask]
    yx = torch.stack((torch.div(flat, w, rounding_mode="floor"), flat % w), 1)
    return batch_ids, flat, yx, score[mask]


def axis_angle_to_rotmat(aa: torch.Tensor) -> torch.Tensor:
    """(N, 3) -> (N, 3, 3) through the unit quaternion, as the released SMPL layer (batch_rodrigues)."""
    angle = torch.norm(aa + 1e-8, dim=1, keepdim=True)
    axis = aa / angle
    half = angle * 0.5
    q = torch.cat((torch.cos(half), torch.sin(half) * axis), 1)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    return torch.stack((w * w + x * x - y * y - z * z, 2 * x * y - 2 * w * z, 2 * w * y + 2 * x * z,
                        2 * w * z + 2 * x * y, w * w - x * x + y * y - z * z, 2 * y * z - 2 * w * x,
                        2 * x * z - 2 * w * y, 2 * w * x + 2 * y * z, w * w - x * x - y * y + z * z), 1).view(-1, 3, 3)


def smpl_from_params(params: torch.Tensor, params_dim: int) -> Dict[str, torch.Tensor]:
    """Sampled parameters (N, P) -> pose_rotmat (N, 24, 3, 3) (the two hand joints the network does not
    estimate are the identity, as the released wrapper pads them with zeros) and betas (N, 10)."""
    s = param_slices(params_dim)
    n = params.shape[0]
    glob = rot6d_to_rotmat(params[:, s["global_orient"]]).view(n, 1, 3, 3)
    body = params[:, s["body_pose"]]
    if params_dim == 79:
        body = axis_angle_to_rotmat(body.reshape(-1, 3)).view(n, 21, 3, 3)
    else:
        body = rot6d_to_rotmat(body).view(n, 21, 3, 3)
    hands = torch.eye(3, dtype=params.dtype).expand(n, 2, 3, 3)
    return {"pose_rotmat": torch.cat((glob, body, hands), 1), "betas": params[:, s["betas"]]}


def postprocess(center_map: torch.Tensor, cam_map: torch.Tensor, params_map: torch.Tensor,
                conf_thresh: float = 0.2, max_person: int = 64) -> Dict[str, torch.Tensor]:
    """The maps of a batch -> one row per detected person (all images together, ``batch_ids`` says whose)."""
    batch_ids, flat, yx, score = centers_from_map(center_map, conf_thresh, max_person)
    maps = torch.cat((cam_map, params_map), 1)
    b, c = maps.shape[:2]
    sampled = maps.view(b, c, -1).permute(0, 2, 1)[batch_ids, flat]  # (N, 3 + P)
    cam = torch.cat((torch.pow(1.1, sampled[:, :1]), sampled[:, 1:3]), 1)  # (s, tx, ty)
    s, tx, ty = cam.unbind(1)
    cam_trans = torch.stack((tx / s, ty / s, 1.0 / s), 1) * 2.0  # ROMP's convert_cam_to_3d_trans
    out = {"batch_ids": batch_ids, "centers_yx": yx, "scores": score, "cam": cam, "cam_trans": cam_trans}
    out.update(smpl_from_params(sampled[:, 3:], params_map.shape[1]))
    return out


def project_to_image(joints3d: torch.Tensor, cam: torch.Tensor, padded_size: torch.Tensor,
                     left_top: torch.Tensor) -> torch.Tensor:
    """Orthographic projection to the padded input in [-1, 1] (``batch_orth_proj``), then to the original
    image's pixels (``convert_kp2d_from_input_to_orgimg``): (N, J, 3), (N, 3), (N,), (N, 2) -> (N, J, 2)."""
    pj = joints3d[:, :, :2] * cam[:, None, :1] + cam[:, None, 1:]
    return (pj + 1) * padded_size[:, None, None] / 2 + left_top[:, None, :]
