"""WHAM (Shin et al., CVPR 2024) as one causal step per frame, and the whole-sequence forward as
those steps in a loop.

The official network (``lib/models/wham.py``) runs four recurrent parts over a track: the motion
encoder (2D keypoints -> 3D keypoints and a motion context), the trajectory decoder (root
orientation and velocity from the context and the camera's angular velocity), the motion decoder
(SMPL pose, shape, crop camera, foot contacts from the context integrated with the image feature)
and the trajectory refiner (root orientation and velocity corrected with the feet's world motion),
each an ``nn.LSTM`` (``Regressor``) started by ``NeuralInitialization`` from the first frame, or
from zeros. Every quantity of frame t reads frames <= t only, with one exception: the integrator
adds its residual to a whole track or to none of it, on whether every feature value of every frame
of the track is non-zero (``(feat != 0).all(-1).all(-1)``). ``WHAMStep`` decides it from the frames
seen so far (``feat_ok`` in the state), which equals the sequence forward whenever the track has no
exactly-zero feature value (real HMR 2.0 tokens never do); a track whose later frame had one would
have had its earlier frames computed without the residual by the official code.

Everything else the sequence forward carries from one frame to the next is the per-track state of
``STATE``: each LSTM's (h, c), the previous 3D keypoints, root orientation and pose fed back, the
running world translation before and after the refiner, the previous feet positions the velocities
are differences of, and whether a previous frame exists.

Submodule and parameter names are the official ones (``motion_encoder.regressor.rnn.weight_ih_l0``,
``trajectory_refiner.refiner.declayer1.bias``, ``smpl.J_regressor_feet`` ...), so a released
``model`` state dict loads strictly. The body model inside the network (feet, pelvis offset, the
full-image camera) is the checkpoint's own ``smpl.*`` buffers, computed with the same linear blend
skinning as smplx.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hmr_trt.errors import InputSpecError

from ...smpl_io import SMPL_PARENTS
from .config import MAIN_JOINTS, N_FEET, N_JOINTS, N_POSE, N_WHAM_JOINTS, WHAMConfig
from .contract import OUTPUTS, state_shapes


def rot6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3): Gram-Schmidt on the two 3-vectors, which become the matrix's rows
    (the pytorch3d convention WHAM's ``lib/utils/transforms.py`` uses)."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def matrix_to_rot6d(m: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two rows."""
    return m[..., :2, :].reshape(*m.shape[:-2], 6)


def y_flip() -> torch.Tensor:
    """The rotation by pi about x that ``return_y_up`` applies, computed in float32 like the official
    ``axis_angle_to_matrix(torch.tensor([[np.pi, 0, 0]]))`` (Rodrigues; its off-diagonal round-off kept)."""
    theta = torch.tensor(np.pi, dtype=torch.float32)
    k = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    return torch.eye(3) + torch.sin(theta) * k + (1 - torch.cos(theta)) * (k @ k)


# ---------------------------------------------------------------------------------------------
# the official building blocks, same names

class Regressor(nn.Module):
    """An LSTM over [input, fed-back values] and one linear head per output (``declayer{i}``)."""

    def __init__(self, in_dim: int, hid_dim: int, out_dims: Tuple[int, ...], init_dim: int, n_layers: int) -> None:
        super().__init__()
        self.n_outs = len(out_dims)
        self.rnn = nn.LSTM(in_dim + init_dim, hid_dim, n_layers, batch_first=True)
        for i, d in enumerate(out_dims):
            setattr(self, f"declayer{i}", nn.Linear(hid_dim, d))

    def step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor,
                                                                                torch.Tensor, torch.Tensor]:
        """x (B, in+init), state (B, layers, H) each -> outputs, LSTM output (B, H), next (h, c)."""
        y, (h2, c2) = self.rnn(x[:, None], (h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous()))
        y = y[:, 0]
        return [getattr(self, f"declayer{i}")(y) for i in range(self.n_outs)], y, h2.transpose(0, 1), c2.transpose(0, 1)


class NeuralInitialization(nn.Module):
    """First-frame values -> the LSTM's initial (h, c), each (B, layers, H)."""

    def __init__(self, in_dim: int, hid_dim: int, n_layers: int) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.linear1 = nn.Linear(in_dim, hid_dim)
        self.linear2 = nn.Linear(hid_dim, hid_dim * n_layers)
        self.linear3 = nn.Linear(hid_dim * n_layers, hid_dim * 2 * n_layers)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.linear3(self.relu2(self.linear2(self.relu1(self.linear1(x)))))
        out = out.reshape(x.shape[0], 2, self.n_layers, -1)  # (B, h/c, layers, H)
        return out[:, 0], out[:, 1]


class Integrator(nn.Module):
    def __init__(self, in_channel: int, out_channel: int, hid_channel: int) -> None:
        super().__init__()
        self.layer1 = nn.Linear(in_channel, hid_channel)
        self.layer2 = nn.Linear(hid_channel, hid_channel)
        self.layer3 = nn.Linear(hid_channel, out_channel)

    def forward(self, x: torch.Tensor, feat: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        out = self.layer3(F.relu(self.layer2(F.relu(self.layer1(torch.cat((x, feat), dim=-1))))))
        return out + residual * x  # residual in {0, 1}: the official out[mask] += res[mask]


class MotionEncoder(nn.Module):
    def __init__(self, cfg: WHAMConfig) -> None:
        super().__init__()
        self.embed_layer = nn.Linear(cfg.in_dim, cfg.d_embed)
        self.neural_init = NeuralInitialization(N_JOINTS * 3 + cfg.in_dim, cfg.d_embed, cfg.n_layers)
        self.regressor = Regressor(cfg.d_embed, cfg.d_embed, (N_JOINTS * 3,), N_JOINTS * 3, cfg.n_layers)


class TrajectoryDecoder(nn.Module):
    def __init__(self, cfg: WHAMConfig) -> None:
        super().__init__()
        self.regressor = Regressor(cfg.d_context, cfg.d_context, (3, 6), 12, cfg.n_layers)


class MotionDecoder(nn.Module):
    def __init__(self, cfg: WHAMConfig) -> None:
        super().__init__()
        self.neural_init = NeuralInitialization(len(MAIN_JOINTS) * 6, cfg.d_context, cfg.n_layers)
        self.regressor = Regressor(cfg.d_context, cfg.d_context, (N_POSE * 6, 10, 3, 4), N_POSE * 6, cfg.n_layers)


class TrajectoryRefiner(nn.Module):
    def __init__(self, cfg: WHAMConfig) -> None:
        super().__init__()
        self.refiner = Regressor(cfg.d_context + 12, cfg.d_embed, (6, 3), 9, cfg.refiner_layers)


class WHAMBody(nn.Module):
    """The network's SMPL: linear blend skinning (smplx's ``lbs`` math) and WHAM's two extra
    regressors; every point is taken relative to the hips' midpoint (``get_output``'s offset)."""

    def __init__(self, vertices: int) -> None:
        super().__init__()
        v = vertices
        self.register_buffer("v_template", torch.zeros(v, 3))
        self.register_buffer("shapedirs", torch.zeros(v, 3, 10))
        self.register_buffer("posedirs", torch.zeros(207, v * 3))
        self.register_buffer("J_regressor", torch.zeros(24, v))
        self.register_buffer("lbs_weights", torch.zeros(v, 24))
        self.register_buffer("parents", torch.tensor(SMPL_PARENTS, dtype=torch.long))
        self.register_buffer("J_regressor_wham", torch.zeros(N_WHAM_JOINTS, v))
        self.register_buffer("J_regressor_feet", torch.zeros(N_FEET, v))

    def vertices(self, rotmat: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """rotmat (N, 24, 3, 3), betas (N, 10) -> vertices (N, V, 3) before the offset."""
        n = rotmat.shape[0]
        v = self.v_template.shape[0]
        v_shaped = self.v_template + torch.matmul(betas, self.shapedirs.reshape(v * 3, -1).transpose(0, 1)).reshape(n, v, 3)
        joints = torch.matmul(self.J_regressor, v_shaped)
        pose_feature = (rotmat[:, 1:] - torch.eye(3)).reshape(n, -1)
        v_posed = torch.matmul(pose_feature, self.posedirs).reshape(n, -1, 3) + v_shaped
        rel = [joints[:, :1]] + [joints[:, j:j + 1] - joints[:, p:p + 1] for j, p in enumerate(SMPL_PARENTS) if j]
        rel_joints = torch.cat(rel, dim=1)  # (N, 24, 3)
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(n, 24, 1, 4)
        mats = torch.cat((torch.cat((rotmat, rel_joints[..., None]), dim=-1), bottom), dim=-2)  # (N, 24, 4, 4)
        chain = [mats[:, 0]]
        for j in range(1, 24):
            chain.append(torch.matmul(chain[SMPL_PARENTS[j]], mats[:, j]))
        transforms = torch.stack(chain, dim=1)
        joints_h = torch.cat((joints, torch.zeros_like(joints[..., :1])), dim=-1)[..., None]  # (N, 24, 4, 1)
        moved = torch.matmul(transforms, joints_h)  # (N, 24, 4, 1)
        rel_transforms = transforms - torch.cat((torch.zeros_like(moved).expand(n, 24, 4, 3), moved), dim=-1)
        t = torch.matmul(self.lbs_weights, rel_transforms.reshape(n, 24, 16)).reshape(n, -1, 4, 4)
        v_h = torch.cat((v_posed, torch.ones_like(v_posed[..., :1])), dim=-1)[..., None]
        return torch.matmul(t, v_h)[..., :3, 0]

    def body_model_data(self, faces: np.ndarray | None = None) -> Dict[str, np.ndarray]:
        """These buffers in SMPL's file layout (``export/smpl_io.py``), for the pipeline's body-model graph;
        ``faces``: the checkpoint's ``smpl.faces_tensor`` (a seeded body gets a strip of triangles)."""
        v = self.v_template.shape[0]
        if faces is None:
            idx = np.arange(v - 2)
            faces = np.stack([idx, idx + 1, idx + 2], axis=1)
        kintree = np.stack([np.array(SMPL_PARENTS), np.arange(24)]).astype(np.int64)
        kintree[0, 0] = -1
        return {"v_template": self.v_template.numpy(), "f": np.asarray(faces, np.int64),
                "J_regressor": self.J_regressor.numpy(), "kintree_table": kintree, "weights": self.lbs_weights.numpy(),
                "shapedirs": self.shapedirs.numpy(), "posedirs": self.posedirs.numpy().T.reshape(v, 3, 207)}

    def points(self, rotmat: torch.Tensor, betas: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """-> (the 31 WHAM joints, the 4 feet points), both relative to the hips' midpoint."""
        verts = self.vertices(rotmat, betas)
        joints = torch.matmul(self.J_regressor_wham, verts)
        feet = torch.matmul(self.J_regressor_feet, verts)
        offset = joints[:, [11, 12]].mean(-2)[:, None]
        return joints - offset, feet - offset


def state_shapes_for(cfg: WHAMConfig) -> Dict[str, Tuple[int, ...]]:
    return state_shapes(cfg.d_embed, cfg.n_layers, cfg.refiner_layers)


class WHAM(nn.Module):
    """The network with the official key names; ``init`` and ``step`` are the per-track recurrence,
    ``forward`` the whole sequence (the official ``Network.forward`` with ``refine_traj=True``)."""

    def __init__(self, cfg: WHAMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng():  # seeded default weights, never the caller's RNG
            torch.manual_seed(cfg.seed)
            self.mask_embedding = nn.Parameter(torch.zeros(1, 1, N_JOINTS, 2))
            self.motion_encoder = MotionEncoder(cfg)
            self.trajectory_decoder = TrajectoryDecoder(cfg)
            self.integrator = Integrator(cfg.d_feat + cfg.d_context, cfg.d_context, cfg.integrator_hidden)
            self.motion_decoder = MotionDecoder(cfg)
            self.trajectory_refiner = TrajectoryRefiner(cfg)
            self.smpl = WHAMBody(cfg.vertices)
            with torch.no_grad():
                self.mask_embedding.normal_(0.0, 0.1)
            seeded_body(self.smpl, cfg.seed)
        self.register_buffer("yup", y_flip(), persistent=False)
        self.faces: np.ndarray | None = None  # the released file's SMPL triangles (checkpoint.load_released)
        self.eval()

    # --- per track -------------------------------------------------------------------------
    def init(self, init_global_orient: torch.Tensor, init_body_pose: torch.Tensor, init_betas: torch.Tensor,
             keypoints: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The first frame's HMR 2.0 SMPL estimate (rotation matrices (B, 3, 3), (B, 23, 3, 3), betas (B, 10))
        and its normalised keypoints (B, 37) -> the state before frame 0 (``CustomDataset``'s inits)."""
        b = keypoints.shape[0]
        full = torch.cat((init_global_orient[:, None], init_body_pose), dim=1)  # (B, 24, 3, 3)
        joints, _ = self.smpl.points(full, init_betas)
        kp3d = joints[:, :N_JOINTS] - joints[:, [12, 11]].mean(-2, keepdim=True)  # root_centering(..., 'coco')
        kp3d = kp3d.reshape(b, -1)
        enc_h, enc_c = self.motion_encoder.neural_init(torch.cat((kp3d, keypoints), dim=-1))
        smpl6d = matrix_to_rot6d(full)  # (B, 24, 6)
        dec_h, dec_c = self.motion_decoder.neural_init(smpl6d[:, list(MAIN_JOINTS)].reshape(b, -1))
        root = smpl6d[:, 0]
        shapes = state_shapes_for(self.cfg)
        zeros = {k: keypoints.new_zeros((b,) + shapes[k]) for k in ("traj_h", "traj_c", "ref_h", "ref_c", "trans",
                                                                   "feet_world", "feet_reset", "trans_ref", "started")}
        return {**zeros, "enc_h": enc_h, "enc_c": enc_c, "dec_h": dec_h, "dec_c": dec_c, "kp3d": kp3d, "root": root,
                "pose": smpl6d.reshape(b, -1), "root_ref": root, "feat_ok": keypoints.new_ones(b, 1)}

    def step(self, keypoints: torch.Tensor, mask: torch.Tensor, features: torch.Tensor, cam_angvel: torch.Tensor,
             bbox: torch.Tensor, camera: torch.Tensor, state: Dict[str, torch.Tensor]
             ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """One frame of B tracks. keypoints (B, 37) normalised (``Normalizer``), mask (B, 17) 1 where a
        keypoint's score is under 0.3, features (B, C), cam_angvel (B, 6), bbox (B, 3) = (cx, cy, scale)
        in pixels and scale * 200 = side, camera (B, 3) = (image width, height, focal length).
        -> (outputs, next state)."""
        b = keypoints.shape[0]
        s = state
        started = s["started"]
        # preprocess: masked keypoints replaced by the learnt embedding
        m2 = mask[:, :, None].expand(b, N_JOINTS, 2).reshape(b, -1)
        kp = torch.where(m2 > 0.5, torch.zeros_like(keypoints[:, :-3]), keypoints[:, :-3])
        kp = kp + (mask[:, :, None] * self.mask_embedding.reshape(1, N_JOINTS, 2)).reshape(b, -1)
        x = torch.cat((kp, keypoints[:, -3:]), dim=-1)
        # 1. motion encoder
        enc = self.motion_encoder
        (kp3d,), y, enc_h, enc_c = enc.regressor.step(torch.cat((enc.embed_layer(x), s["kp3d"]), -1),
                                                      s["enc_h"], s["enc_c"])
        context = torch.cat((y, kp3d), dim=-1)
        # 2. trajectory decoder
        (vel, root), _, traj_h, traj_c = self.trajectory_decoder.regressor.step(
            torch.cat((context, s["root"], cam_angvel), -1), s["traj_h"], s["traj_c"])
        # 3. integrator (residual while every feature value so far is non-zero)
        feat_ok = s["feat_ok"] * (features != 0).all(dim=-1, keepdim=True).to(features.dtype)
        integrated = self.integrator(context, features, feat_ok)
        # 4. motion decoder
        (pose, betas, cam, contact), _, dec_h, dec_c = self.motion_decoder.regressor.step(
            torch.cat((integrated, s["pose"]), -1), s["dec_h"], s["dec_c"])
        # body model in the camera frame (forward_smpl)
        rotmat = rot6d_to_matrix(pose.reshape(b, N_POSE, 6))
        _, feet = self.smpl.points(rotmat, betas)
        cam_t = full_image_camera(cam, bbox, camera)
        # unrefined rollout and the feet in the world (rollout_global_motion, compute_global_feet)
        root_prev = rot6d_to_matrix(s["root"])
        root_w = rot6d_to_matrix(root)
        trans = s["trans"] + torch.matmul(root_prev, vel[..., None])[..., 0]
        cam_r = torch.matmul(rot6d_to_matrix(pose[:, :6]), root_w.transpose(-1, -2))
        pelvis_world = torch.matmul(cam_r.transpose(-1, -2), cam_t[..., None])[..., 0]
        cam_tr = torch.matmul(cam_r, (pelvis_world - trans)[..., None])[..., 0]
        feet_cam = feet + cam_t[:, None]
        feet_world = torch.matmul(cam_r.transpose(-1, -2), (feet_cam - cam_tr[:, None]).transpose(-1, -2))
        feet_world = feet_world.transpose(-1, -2)
        # reset_root_velocity (thr=0.5): stationary feet's velocity removed from the root's
        still = (contact > 0.5).to(contact.dtype)[..., None]
        vel_world = torch.matmul(root_w, vel[..., None])[..., 0]
        _, feet_reset = self.smpl.points(torch.cat((root_w[:, None], rotmat[:, 1:]), dim=1), betas)
        feet_vel = started[..., None] * (feet_reset - s["feet_reset"] + vel_world[:, None])
        still_vel = feet_vel * still
        del_vel = still_vel.sum(dim=1) / ((still_vel != 0).sum(dim=1).to(still_vel.dtype) + 1e-4)
        update_vel = torch.matmul(root_w.transpose(-1, -2), (vel_world - del_vel)[..., None])[..., 0]
        # 5. trajectory refiner
        feet_in = (started[..., None] * (feet_world - s["feet_world"]) * 30 * contact[..., None]).reshape(b, -1)
        (d_root, d_vel), _, ref_h, ref_c = self.trajectory_refiner.refiner.step(
            torch.cat((context, feet_in, root, update_vel), -1), s["ref_h"], s["ref_c"])
        root_ref = root + d_root
        vel_ref = update_vel + d_vel
        trans_ref = s["trans_ref"] + torch.matmul(rot6d_to_matrix(s["root_ref"]), vel_ref[..., None])[..., 0]
        root_world = rot6d_to_matrix(root_ref)
        trans_world = trans_ref
        if self.cfg.y_up:
            flip = self.yup.transpose(0, 1)
            root_world = torch.matmul(flip, root_world)
            trans_world = torch.matmul(flip, trans_world[..., None])[..., 0]
        out = {"pose_rotmat": rotmat, "betas": betas, "cam": cam, "cam_t": cam_t, "contact": contact,
               "root_world": root_world, "trans_world": trans_world}
        nxt = {"enc_h": enc_h, "enc_c": enc_c, "traj_h": traj_h, "traj_c": traj_c, "dec_h": dec_h, "dec_c": dec_c,
               "ref_h": ref_h, "ref_c": ref_c, "kp3d": kp3d, "root": root, "pose": pose, "trans": trans,
               "feet_world": feet_world, "feet_reset": feet_reset, "root_ref": root_ref, "trans_ref": trans_ref,
               "started": torch.ones_like(started), "feat_ok": feat_ok}
        return out, nxt

    # --- whole sequence -------------------------------------------------------------------
    def forward(self, keypoints: torch.Tensor, mask: torch.Tensor, features: torch.Tensor, cam_angvel: torch.Tensor,
                bbox: torch.Tensor, camera: torch.Tensor, init_global_orient: torch.Tensor,
                init_body_pose: torch.Tensor, init_betas: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Tracks of T frames: keypoints (B, T, 37), mask (B, T, 17), features (B, T, C), cam_angvel (B, T, 6),
        bbox (B, T, 3), camera (B, 3), the first frame's SMPL estimate -> {output: (B, T, ...)}."""
        check_sequence(self.cfg, keypoints, mask, features, cam_angvel, bbox, camera)
        state = self.init(init_global_orient, init_body_pose, init_betas, keypoints[:, 0])
        frames = []
        for t in range(keypoints.shape[1]):
            out, state = self.step(keypoints[:, t], mask[:, t], features[:, t], cam_angvel[:, t], bbox[:, t],
                                   camera, state)
            frames.append(out)
        return {k: torch.stack([f[k] for f in frames], dim=1) for k in OUTPUTS}


def full_image_camera(cam: torch.Tensor, bbox: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """The crop's weak-perspective (s, tx, ty) -> the camera translation in the full image
    (``convert_pare_to_full_img_cam`` with a 224-pixel crop)."""
    s, tx, ty = cam[:, 0], cam[:, 1], cam[:, 2]
    height = bbox[:, 2] * 200.0
    focal = camera[:, 2]
    r = height / 224
    tz = 2 * focal / (r * 224 * s)
    cx = 2 * (bbox[:, 0] - (camera[:, 0] / 2.0)) / (s * height)
    cy = 2 * (bbox[:, 1] - (camera[:, 1] / 2.0)) / (s * height)
    return torch.stack((tx + cx, ty + cy, tz), dim=-1)


def check_sequence(cfg: WHAMConfig, keypoints: torch.Tensor, mask: torch.Tensor, features: torch.Tensor,
                   cam_angvel: torch.Tensor, bbox: torch.Tensor, camera: torch.Tensor) -> None:
    """Shapes of a whole-sequence call, one line on the first that is wrong."""
    if keypoints.dim() != 3:
        raise InputSpecError(f"wham: keypoints have shape {tuple(keypoints.shape)}, expected (B, T, {cfg.in_dim})")
    b, t = keypoints.shape[:2]
    want = {"keypoints": (keypoints, (b, t, cfg.in_dim)), "mask": (mask, (b, t, N_JOINTS)),
            "features": (features, (b, t, cfg.d_feat)), "cam_angvel": (cam_angvel, (b, t, 6)),
            "bbox": (bbox, (b, t, 3)), "camera": (camera, (b, 3))}
    for name, (arr, shape) in want.items():
        if tuple(arr.shape) != shape:
            raise InputSpecError(f"wham: {name} has shape {tuple(arr.shape)}, expected {shape}")
    if t < cfg.min_frames:
        raise InputSpecError(f"wham: a track of {t} frames is too short; WHAM's demo keeps tracks of at least "
                             f"{cfg.min_frames} frames (MINIMUM_FRMAES)")


def seeded_body(body: WHAMBody, seed: int) -> None:
    """A seeded stand-in body (NOT SMPL): a figure-sized cloud of vertices, skinning weights peaked on
    nearby joints, small shape and pose directions, and each regressor row a convex mix of a few
    vertices. For runs without a released checkpoint (which carries the real buffers)."""
    rng = np.random.default_rng(seed + 1000)
    v = body.v_template.shape[0]
    verts = rng.uniform(-1, 1, (v, 3)) * np.array([0.25, 0.85, 0.12])

    def mix(rows: int) -> np.ndarray:
        out = np.zeros((rows, v))
        for r in range(rows):
            idx = rng.choice(v, size=min(4, v), replace=False)
            w = rng.uniform(0.5, 1.0, idx.size)
            out[r, idx] = w / w.sum()
        return out

    jreg = mix(24)
    joints = jreg @ verts
    dist = np.linalg.norm(verts[:, None] - joints[None], axis=-1)
    weights = np.exp(-dist / 0.05)
    weights /= weights.sum(1, keepdims=True)
    with torch.no_grad():
        for name, arr in (("v_template", verts), ("J_regressor", jreg), ("lbs_weights", weights),
                          ("shapedirs", rng.normal(0, 0.01, (v, 3, 10))), ("posedirs", rng.normal(0, 0.001, (207, v * 3))),
                          ("J_regressor_wham", mix(N_WHAM_JOINTS)), ("J_regressor_feet", mix(N_FEET))):
            getattr(body, name).copy_(torch.from_numpy(arr.astype(np.float32)))

