"""Regenerate tests/fixtures/wham_official.npz and wham_official_tiny.pth.tar: the official WHAM code's
outputs over a whole track, so that tests check hmr-trt's WHAM (whole sequence, and its step graph fed
frame by frame) against the official code without it.

    # the official repository's snapshot, never in this repository (configs/ and lib/ are enough):
    git -C <WHAM checkout> archive HEAD configs lib | tar x -C /tmp/wham24
    .venv/bin/python tools/wham_official_parity.py --official /tmp/wham24 [--full]

What it does, on the CPU (the official modules imported from the snapshot):
1. Writes a body model in SMPL's file layout (``SMPL_NEUTRAL.pkl``) and WHAM's regressors
   (``J_regressor_wham.npy``, ``J_regressor_feet.npy``, ``J_regressor_h36m.npy``) from hmr-trt's seeded
   stand-in body (NOT SMPL), and points the official ``configs/constants.py`` paths at them.
2. Builds the official ``Network`` (``lib/models/wham.py``) with its official ``SMPL`` (smplx) from
   ``configs/yamls/model_base.yaml`` (tiny: ``d_embed`` 16, a 32-d feature, and the official
   ``Integrator`` at 32 hidden units instead of its fixed 1024); draws every parameter from a seeded
   generator (PyTorch's default bounds; the crop camera's scale, the contacts and the pose start near
   a trained model's so the contact threshold and the cameras are exercised) and saves it as
   ``lib/core/trainer.py`` does (``epoch``, ``model``, ``performance``, ``optimizer``).
3. Makes a track (keypoints with scores, some under 0.3, boxes from them by the demo's rule, image
   features, a moving camera as DPVO's trajectory layout) and runs the official ``CustomDataset``
   (``lib/data/datasets/dataset_custom.py``: normalisation, the SMPL init, ``cam_angvel``) and the
   official forward (``return_y_up=True`` as demo.py).
Dependencies not used by that path are stand-ins: ``loguru`` (logging), ``lib.data``'s package
``__init__`` (training datasets), smplx's extra-joint vertex ids (the 40-vertex body has no vertex
6890; WHAM never reads those joints).
Prints the largest differences against hmr-trt's reference loaded from the written file.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "wham_official.npz"
CHECKPOINT = ROOT / "tests" / "fixtures" / "wham_official_tiny.pth.tar"
SEED, INPUT_SEED, FRAMES, WIDTH, HEIGHT, FPS = 0, 1, 320, 640.0, 480.0, 30.0
OUTPUTS = ("pose_rotmat", "betas", "cam", "cam_t", "contact", "root_world", "trans_world")


def import_official(snapshot: Path, body_dir: Path):
    """The official modules, with the stand-ins named in the docstring."""
    sys.path.insert(0, str(snapshot))
    loguru = types.ModuleType("loguru")
    loguru.logger = types.SimpleNamespace(info=lambda *a, **k: None, warning=lambda *a, **k: None)
    sys.modules.setdefault("loguru", loguru)
    for pkg in ("lib.data", "lib.data.datasets"):  # skip the training datasets' imports
        mod = types.ModuleType(pkg)
        mod.__path__ = [str(snapshot / pkg.replace(".", "/"))]
        sys.modules[pkg] = mod
    from configs import constants as C

    C.BMODEL.FLDR = str(body_dir)
    C.BMODEL.JOINTS_REGRESSOR_WHAM = str(body_dir / "J_regressor_wham.npy")
    C.BMODEL.JOINTS_REGRESSOR_H36M = str(body_dir / "J_regressor_h36m.npy")
    C.BMODEL.JOINTS_REGRESSOR_FEET = str(body_dir / "J_regressor_feet.npy")
    import smplx.vertex_ids as vids

    for table in vids.vertex_ids.values():  # the stand-in body's 40 vertices
        for i, key in enumerate(list(table)):
            table[key] = i % 8
    from lib.data.datasets import dataset_custom
    from lib.models import wham
    from lib.models.layers import modules

    return C, wham, modules, dataset_custom


def write_body(body, folder: Path) -> None:
    """hmr-trt's seeded body buffers as an SMPL file and WHAM's regressor files."""
    folder.mkdir(parents=True, exist_ok=True)
    v = body.v_template.numpy().astype(np.float64)
    n = v.shape[0]
    data = {"v_template": v, "shapedirs": body.shapedirs.numpy().astype(np.float64),
            "posedirs": body.posedirs.numpy().T.reshape(n, 3, 207).astype(np.float64),
            "J_regressor": body.J_regressor.numpy().astype(np.float64),
            "weights": body.lbs_weights.numpy().astype(np.float64),
            "kintree_table": np.stack([body.parents.numpy(), np.arange(24)]).astype(np.int64),
            "f": np.array([[0, 1, 2], [1, 2, 3]], dtype=np.int64)}
    data["kintree_table"][0, 0] = 4294967295
    with open(folder / "SMPL_NEUTRAL.pkl", "wb") as fh:
        pickle.dump(data, fh)
    np.save(folder / "J_regressor_wham.npy", body.J_regressor_wham.numpy())
    np.save(folder / "J_regressor_feet.npy", body.J_regressor_feet.numpy())
    np.save(folder / "J_regressor_h36m.npy", np.full((17, n), 1.0 / n, np.float32))


def build_official(C, wham, modules, cfg, snapshot: Path, seed: int):
    import yaml
    from lib.models import build_body_model

    with open(snapshot / "configs" / "yamls" / "model_base.yaml") as fh:
        model_config = yaml.safe_load(fh)
    model_config.update({"d_embed": cfg.d_embed, "d_feat": cfg.d_feat})
    torch.manual_seed(seed)
    smpl = build_body_model("cpu")
    net = wham.Network(smpl, **model_config)
    if cfg.integrator_hidden != 1024:  # the official Integrator at the tiny width
        net.integrator = modules.Integrator(cfg.d_feat + cfg.d_context, cfg.d_context, hid_channel=cfg.integrator_hidden)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith("smpl."):
                continue
            fan_in = p.shape[1] if p.dim() > 1 else p.shape[0]
            if ".rnn." in name:
                fan_in = p.shape[0] // 4
            bound = 1.0 / np.sqrt(max(fan_in, 1))
            p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=gen))
        dec = net.motion_decoder.regressor
        dec.declayer0.bias.add_(torch.tensor([1.0, 0, 0, 0, 1.0, 0] * 24))  # poses near the rest pose
        dec.declayer2.bias.copy_(torch.tensor([0.9, 0.0, 0.1]))  # a trained crop camera's scale
        dec.declayer3.bias.copy_(torch.tensor([0.5, 0.3, 0.6, 0.45]))  # contacts on both sides of 0.5
    return net.eval()


def save_released(net, path: Path) -> None:
    opt = torch.optim.Adam([p for n, p in net.named_parameters() if not n.startswith("smpl.")], lr=1e-4)
    torch.save({"epoch": 40, "model": net.state_dict(), "performance": np.float64(71.3),
                "optimizer": opt.state_dict()}, path)


def make_track(cfg, frames: int, seed: int) -> dict:
    """A person walking across the image: keypoints (T, 17, 3), boxes, features, the first frame's
    SMPL estimate, and a slowly turning camera in DPVO's (x, y, z, qx, qy, qz, qw) layout."""
    from hmr_trt.runtime.wham_stream import box_from_keypoints

    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1, (17, 2)) * np.array([25.0, 70.0])
    t = np.arange(frames)[:, None, None]
    kp = base[None] + np.concatenate([200 + 1.2 * t, 240 + 10 * np.sin(t / 9.0)], axis=-1)
    kp = kp + rng.normal(0, 2.0, kp.shape)
    scores = rng.uniform(0.0, 1.0, (frames, 17, 1))
    scores[:, :8] = np.maximum(scores[:, :8], 0.5)  # always enough keypoints for a box
    keypoints = np.concatenate([kp, scores], -1).astype(np.float32)
    bbox = np.stack([box_from_keypoints(k) for k in keypoints])
    features = rng.normal(0, 1, (frames, cfg.d_feat)).astype(np.float32)
    ang = np.cumsum(rng.normal(0, 0.01, (frames, 3)), axis=0)
    half = np.linalg.norm(ang, axis=-1, keepdims=True) / 2
    axis = ang / np.maximum(np.linalg.norm(ang, axis=-1, keepdims=True), 1e-12)
    quat = np.concatenate([axis * np.sin(half), np.cos(half)], -1)  # (qx, qy, qz, qw)
    slam = np.concatenate([np.zeros((frames, 3)), quat], -1)

    def rot(aa):
        th = np.linalg.norm(aa)
        k = np.array([[0, -aa[2], aa[1]], [aa[2], 0, -aa[0]], [-aa[1], aa[0], 0]]) / max(th, 1e-12)
        return np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * k @ k

    go = rot(rng.normal(0, 0.3, 3) + np.array([np.pi, 0, 0]))
    body = np.stack([rot(a) for a in rng.normal(0, 0.2, (23, 3))])
    return {"keypoints": keypoints, "bbox": bbox, "features": features, "slam": slam,
            "init_global_orient": go.astype(np.float32), "init_body_pose": body.astype(np.float32),
            "init_betas": rng.normal(0, 0.5, 10).astype(np.float32)}


def run_official(C, dataset_custom, net, track: dict) -> dict:
    results = {0: {"keypoints": track["keypoints"], "bbox": track["bbox"].astype(np.float32),
                   "features": torch.from_numpy(track["features"]),
                   "init_global_orient": torch.from_numpy(track["init_global_orient"])[None, None],
                   "init_body_pose": torch.from_numpy(track["init_body_pose"])[None],
                   "init_betas": torch.from_numpy(track["init_betas"])[None],
                   "frame_id": np.arange(len(track["keypoints"]))}}
    ds = dataset_custom.CustomDataset(types.SimpleNamespace(DEVICE="cpu"), results, track["slam"], WIDTH, HEIGHT, FPS)
    _id, x, inits, features, mask, init_root, cam_angvel, frame_id, kwargs = ds.load_data(0)
    x_in, mask_in = x.clone(), mask.clone()
    with torch.no_grad():
        pred = net(x, inits, features, mask=mask, init_root=init_root, cam_angvel=cam_angvel, return_y_up=True,
                   **kwargs)
    from lib.utils import transforms

    pose = transforms.rotation_6d_to_matrix(pred["pose"].reshape(1, -1, 24, 6))
    return {"x": x_in[0].numpy(), "mask": mask_in[0].float().numpy(), "cam_angvel": cam_angvel[0].numpy(),
            "init_kp": inits[0][0, 0].numpy(), "focal": float(kwargs["cam_intrinsics"][0, 0, 0, 0]),
            "pose_rotmat": pose[0].numpy(), "betas": pred["betas"][0].numpy(), "cam": pred["cam"][0].numpy(),
            "cam_t": pred["trans_cam"].reshape(-1, 3).numpy(), "contact": pred["contact"][0].numpy(),
            "root_world": pred["poses_root_world"][0].numpy(), "trans_world": pred["trans_world"][0].numpy()}


def ours(cfg, checkpoint: Path, track: dict, official: dict) -> dict:
    """hmr-trt's whole-sequence forward on the same track, its own normalisation from the raw keypoints."""
    from hmr_trt.export.models.wham.checkpoint import load_released
    from hmr_trt.export.models.wham.model import WHAM
    from hmr_trt.runtime.wham_stream import camera_row, normalize_keypoints

    model = WHAM(cfg)
    load_released(model, checkpoint)
    xs, masks = zip(*(normalize_keypoints(k, b, WIDTH, HEIGHT) for k, b in zip(track["keypoints"], track["bbox"])))
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32))[None]  # noqa: E731
    with torch.no_grad():
        out = model(t(np.stack(xs)), t(np.stack(masks)), t(track["features"]), t(official["cam_angvel"]),
                    t(track["bbox"]), t(camera_row(WIDTH, HEIGHT)), t(track["init_global_orient"]),
                    t(track["init_body_pose"]), t(track["init_betas"]))
    got = {k: v[0].numpy() for k, v in out.items()}
    got["x"], got["mask"] = np.stack(xs), np.stack(masks)
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help="folder with the official configs/ and lib/")
    ap.add_argument("--work", type=Path, default=Path("/tmp/wham24/parity"))
    ap.add_argument("--full", action="store_true", help="the released widths (no fixture written)")
    ap.add_argument("--frames", type=int, default=FRAMES)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from hmr_trt.export.models.wham.config import TINY, WHAMConfig
    from hmr_trt.export.models.wham.model import WHAM

    cfg = WHAMConfig() if args.full else WHAMConfig(**TINY)
    if not args.full:
        cfg = WHAMConfig(**{**cfg.to_dict(), "integrator_hidden": TINY["integrator_hidden"]})
    args.work.mkdir(parents=True, exist_ok=True)
    write_body(WHAM(cfg).smpl, args.work / "body")
    C, wham, modules, dataset_custom = import_official(args.official, args.work / "body")
    net = build_official(C, wham, modules, cfg, args.official, SEED)
    checkpoint = args.work / "wham_seeded.pth.tar" if args.full else CHECKPOINT
    save_released(net, checkpoint)
    track = make_track(cfg, args.frames, INPUT_SEED)
    official = run_official(C, dataset_custom, net, track)
    got = ours(cfg, checkpoint, track, official)
    for key in ("x", "mask") + OUTPUTS:
        diff = np.abs(got[key] - official[key])
        print(f"{key:12s} max |ours - official| {diff.max():.3g}  (max |official| {np.abs(official[key]).max():.3g})")
    if not args.full:
        np.savez_compressed(FIXTURE, config=np.array(repr(cfg.to_dict())), width=WIDTH, height=HEIGHT,
                            **{k: np.asarray(v) for k, v in track.items()},
                            **{f"official_{k}": np.asarray(v) for k, v in official.items()})
        print(f"wrote {FIXTURE.relative_to(ROOT)} ({FIXTURE.stat().st_size} bytes), "
              f"{CHECKPOINT.relative_to(ROOT)} ({CHECKPOINT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
