"""Check hmr-trt's GLoT against the official code (sxl142/GLoT) and write the test fixture.

Runs OUTSIDE the repository's code paths: the official ``lib/`` is imported from ``--official``
(a checkout of github.com/sxl142/GLoT; nothing of it is copied here). Steps:

1. Build hmr-trt's seeded GLoT (``GlotConfig(seed=--seed)``) and write its weights as a released
   checkpoint (the trainer's save dict: ``epoch``, ``gen_state_dict``, numpy ``performance``,
   ``gen_optimizer``), the SMPL buffers taken from the official model itself.
2. Build the official ``GLoT`` as ``demo.py`` does from ``configs/repr_table1_3dpw.yaml`` and load the
   file as ``demo.py`` does (``['gen_state_dict']``, ``strict=True``), on the CPU.
3. Load the same file with hmr-trt's loader (weights only, strict) and run both on the same
   features; print the max abs differences of rotation matrices, betas and camera; write the seeds
   and the official outputs to ``--out`` (``tests/fixtures/glot_official.npz``).

What is patched at import time, none of it on the inference path:
- ``transformer_global.py`` moves the mean-parameter tensors to ``'cuda'`` in ``__init__`` (used only
  by training masking): ``Tensor.to('cuda')`` is mapped to the CPU while the model is built.
- ``timm.models.layers.DropPath`` (timm is not installed here) is given as a module that is the
  identity in eval mode and refuses training mode (timm's DropPath is the identity in eval).
- ``torchvision.models.resnet`` (imported by ``lib/models/spin.py`` for the HMR backbone, unused by
  the regressor) is an empty module.
- smplx 0.1.15 instead of the pinned 0.1.13: 0.1.13's ``batch_rigid_transform`` calls ``.view`` on a
  non-contiguous tensor, which current torch refuses (0.1.15 changed it to ``.reshape``); same buffers.
- The SMPL files under ``BASE_DATA_DIR`` are the project's synthetic body model written in SMPL's
  pickle layout (they only feed the official code's own mesh outputs, not the compared tensors);
  ``smpl_mean_params.npz`` holds the identity start (the checkpoint overwrites the buffers).

Usage:
    git clone https://github.com/sxl142/GLoT /tmp/glot-official
    pip install --target /tmp/glot-deps --no-deps smplx==0.1.15 yacs
    .venv/bin/python tools/glot_official_parity.py --official /tmp/glot-official --deps /tmp/glot-deps
"""

from __future__ import annotations

import argparse
import contextlib
import pickle
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import yaml

from hmr_trt.export.models.glot.adapter import ADAPTER
from hmr_trt.export.models.glot.checkpoint import BODY_MODEL_PREFIXES, body_model_keys
from hmr_trt.export.models.glot.config import GlotConfig
from hmr_trt.export.models.spin import identity_mean_params
from hmr_trt.export.synthetic_smpl import make_synthetic_smpl

SMPL_VERTICES = 6890
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "glot_official.npz"


def write_base_data(data_dir: Path) -> None:
    """SMPL_NEUTRAL.pkl (synthetic body model, SMPL's pickle keys), J_regressor_extra.npy, mean params."""
    smpl = make_synthetic_smpl(seed=0)
    # smplx selects extra joints by SMPL vertex ids (up to 6260): repeat vertices up to SMPL's 6890
    pad = np.arange(SMPL_VERTICES - smpl["v_template"].shape[0]) % smpl["v_template"].shape[0]
    for key in ("v_template", "weights", "shapedirs", "posedirs"):
        smpl[key] = np.concatenate([smpl[key], smpl[key][pad]])
    smpl["J_regressor"] = np.concatenate([smpl["J_regressor"], np.zeros((24, len(pad)), np.float32)], axis=1)
    with open(data_dir / "SMPL_NEUTRAL.pkl", "wb") as fh:
        pickle.dump({k: smpl[k] for k in ("v_template", "f", "J_regressor", "kintree_table", "weights",
                                           "shapedirs", "posedirs")}, fh)
    rng = np.random.default_rng(0)
    extra = rng.random((9, smpl["v_template"].shape[0])).astype(np.float32)
    np.save(data_dir / "J_regressor_extra.npy", extra / extra.sum(axis=1, keepdims=True))
    np.savez(data_dir / "smpl_mean_params.npz", **identity_mean_params())


def install_stubs() -> None:
    class DropPath(torch.nn.Module):
        def __init__(self, drop_prob: float = 0.0) -> None:
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training and self.drop_prob > 0:
                raise RuntimeError("DropPath stub: eval mode only")
            return x

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath
    for name, module in {"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"),
                         "timm.models.layers": layers, "torchvision": types.ModuleType("torchvision"),
                         "torchvision.models": types.ModuleType("torchvision.models"),
                         "torchvision.models.resnet": types.ModuleType("torchvision.models.resnet")}.items():
        sys.modules.setdefault(name, module)


@contextlib.contextmanager
def cuda_to_cpu():
    original = torch.Tensor.to

    def to(self, *args, **kwargs):
        args = tuple("cpu" if isinstance(a, str) and a.startswith("cuda") else a for a in args)
        if isinstance(kwargs.get("device"), str) and kwargs["device"].startswith("cuda"):
            kwargs["device"] = "cpu"
        return original(self, *args, **kwargs)

    torch.Tensor.to = to
    try:
        yield
    finally:
        torch.Tensor.to = original


def official_model(official: Path, data_dir: Path) -> torch.nn.Module:
    sys.path.insert(0, str(official))
    import lib.core.config as official_config  # the official package, from --official

    official_config.BASE_DATA_DIR = str(data_dir)  # read by lib.models.smpl at import
    from lib.models.GLoT import GLoT  # the official model, from --official

    model_cfg = yaml.safe_load((official / "configs" / "repr_table1_3dpw.yaml").read_text())
    m, d = model_cfg["MODEL"], model_cfg["DATASET"]
    with cuda_to_cpu():
        model = GLoT(seqlen=d["SEQLEN"], batch_size=model_cfg["TRAIN"]["BATCH_SIZE"], n_layers=m["n_layers"],
                     d_model=m["d_model"], num_head=m["num_head"], dropout=m["dropout"],
                     drop_path_r=m["drop_path_r"], atten_drop=m["atten_drop"], mask_ratio=m["mask_ratio"],
                     short_n_layers=m["short_n_layers"], short_d_model=m["short_d_model"],
                     short_num_head=m["short_num_head"], short_dropout=m["short_dropout"],
                     short_drop_path_r=m["short_drop_path_r"], short_atten_drop=m["short_atten_drop"],
                     stride_short=m["stride_short"], drop_reg_short=m["drop_reg_short"], pretrained="")
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help="checkout of github.com/sxl142/GLoT")
    ap.add_argument("--deps", type=Path, help="folder with smplx and yacs (pip --target)")
    ap.add_argument("--seed", type=int, default=0, help="seed of hmr-trt's default GLoT weights")
    ap.add_argument("--input-seed", type=int, default=1, help="seed of the random feature windows")
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--out", type=Path, default=FIXTURE)
    args = ap.parse_args()
    if args.deps:
        sys.path.insert(0, str(args.deps))
    install_stubs()
    torch.set_num_threads(1)  # deterministic reductions on both sides

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        write_base_data(data_dir)
        official = official_model(args.official.resolve(), data_dir)
        cfg = GlotConfig(seed=args.seed, init_gain=0.4, trained_like=False)  # the committed fixture's weights
        ours_seeded = ADAPTER.reference(cfg)
        state = dict(ours_seeded.state_dict())
        body = {k: v for k, v in official.state_dict().items() if k.startswith(BODY_MODEL_PREFIXES)}
        if set(body) != set(body_model_keys()):
            raise SystemExit(f"SMPL buffer keys differ from checkpoint.SMPL_BUFFERS: "
                             f"{sorted(set(body) ^ set(body_model_keys()))}")
        state.update(body)
        ckpt = data_dir / "table1_3dpw_weights.pth.tar"
        torch.save({"epoch": 0, "gen_state_dict": state, "performance": np.float64(42.0),
                    "gen_optimizer": {"state": {}, "param_groups": []}}, ckpt)

        official.load_state_dict(torch.load(ckpt, weights_only=False)["gen_state_dict"], strict=True)
        official.eval()
        ours = ADAPTER.reference(cfg, checkpoint=ckpt)
        (features,) = ADAPTER.example_inputs(cfg, "temporal", args.windows, seed=args.input_seed)
        with torch.no_grad():
            out, _, _ = official(features, is_train=False, J_regressor=None)
            rotmat_o = out[-1]["rotmat"].reshape(args.windows, 24, 3, 3)
            theta = out[-1]["theta"]  # (B, 85): cam (3), axis-angle pose (72), betas (10)
            cam_o, betas_o = theta[:, :3], theta[:, -10:]
            rotmat, betas, cam = ours(features)
            rotmat_s, betas_s, cam_s = ours_seeded(features)
    diffs = {"pose_rotmat": (rotmat[:, 0] - rotmat_o).abs().max().item(),
             "betas": (betas[:, 0] - betas_o).abs().max().item(),
             "cam": (cam[:, 0] - cam_o).abs().max().item(),
             "seeded_vs_loaded": max((a - b).abs().max().item() for a, b in
                                     ((rotmat, rotmat_s), (betas, betas_s), (cam, cam_s)))}
    print("max abs difference, hmr-trt vs official (same checkpoint, same features):")
    for k, v in diffs.items():
        print(f"  {k:18s} {v:.3e}")
    print(f"  value ranges: rotmat [{rotmat_o.min():.3f}, {rotmat_o.max():.3f}], betas "
          f"[{betas_o.min():.3f}, {betas_o.max():.3f}], cam [{cam_o.min():.3f}, {cam_o.max():.3f}]")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, seed=args.seed, input_seed=args.input_seed, windows=args.windows,
                        pose_rotmat=rotmat_o.numpy(), betas=betas_o.numpy(), cam=cam_o.numpy())
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
