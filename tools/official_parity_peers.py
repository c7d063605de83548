"""Regenerate the official-equivalence fixtures of TCMR, MPS-Net and VIBE.

For each model: build hmr-trt's seeded reference (released widths; the GRU hidden size reduced to
keep the run small), save it as a released trainer checkpoint (``save_trainer_checkpoint``: the
official layout, SMPL buffers and optimizer states included), load that file into the OFFICIAL
model code exactly as its demo does (``torch.load`` + ``load_state_dict(gen_state_dict,
strict=False)``), feed seeded features and store the official outputs (rotation matrices, betas,
camera) in ``tests/fixtures/official_<model>.npz``. The tests rebuild the same checkpoint, load it
with hmr-trt's loader and compare.

The official code is imported from the repository roots you give (never copied here). Only what
cannot run on this machine is replaced at import time: the SMPL body model (needs licensed model
files; its output is not compared), torchvision (only the unused HMR backbone needs it) and the
yacs config module (only data paths are read from it).

    python tools/official_parity_peers.py --tcmr /tmp/TCMR_RELEASE --mpsnet /tmp/MPS-Net_release \
        --vibe /tmp/VIBE [--out tests/fixtures]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

FIXTURE_CFG = {"tcmr": {"hidden": 64}, "mpsnet": {}, "vibe": {"hidden": 64}}
SEED, INPUT_SEED = 3, 11
BATCHES = {"tcmr": 2, "mpsnet": 1, "vibe": 2}  # MPS-Net: the official fusion is per window only at batch 1


def features(model: str, cfg) -> torch.Tensor:
    from hmr_trt.export.models.temporal import random_features

    return random_features(torch.Generator().manual_seed(INPUT_SEED), BATCHES[model], cfg.window, cfg.feature_dim)


def seeded_reference(model: str):
    from hmr_trt import registry

    adapter = registry.adapter(model)
    cfg = adapter.Config(seed=SEED, trained_like=False, **FIXTURE_CFG[model])  # the plain seeded draw
    return cfg, adapter.reference(cfg)


def _stub_official_imports(root: Path) -> None:
    """Make ``lib.*`` importable from ``root`` without its package __init__ side effects."""
    for name in [m for m in sys.modules if m == "lib" or m.startswith("lib.")]:
        del sys.modules[name]
    for pkg in ("lib", "lib.core", "lib.models", "lib.utils"):
        mod = types.ModuleType(pkg)
        mod.__path__ = [str(root / pkg.replace(".", "/"))]
        sys.modules[pkg] = mod
    cfg = types.ModuleType("lib.core.config")
    cfg.BASE_DATA_DIR = cfg.VIBE_DATA_DIR = "/nonexistent"  # no SPIN checkpoint: the pretrained branch is skipped
    sys.modules["lib.core.config"] = cfg

    mean = Path(tempfile.mkdtemp()) / "smpl_mean_params.npz"
    identity = np.tile(np.array([1, 0, 0, 1, 0, 0], np.float32), 24)
    np.savez(mean, pose=identity, shape=np.zeros(10, np.float32), cam=np.array([0.9, 0.0, 0.0], np.float32))

    class SMPL(torch.nn.Module):  # the body model is not compared; zeros of the right shapes
        def __init__(self, *args, **kwargs):
            super().__init__()

        def forward(self, betas=None, body_pose=None, global_orient=None, pose2rot=True):
            n = betas.shape[0]
            return types.SimpleNamespace(vertices=torch.zeros(n, 6890, 3), joints=torch.zeros(n, 49, 3))

    smpl = types.ModuleType("lib.models.smpl")
    smpl.SMPL, smpl.SMPL_MODEL_DIR, smpl.SMPL_MEAN_PARAMS = SMPL, "/nonexistent", str(mean)
    smpl.H36M_TO_J14 = list(range(14))
    sys.modules["lib.models.smpl"] = smpl
    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    tv.models.resnet = types.ModuleType("torchvision.models.resnet")
    tv.models.resnet.Bottleneck = object
    sys.modules.update({"torchvision": tv, "torchvision.models": tv.models, "torchvision.models.resnet": tv.models.resnet})
    sys.path.insert(0, str(root))


def official_model(model: str, root: Path, cfg):
    _stub_official_imports(root)
    try:
        if model == "tcmr":
            return importlib.import_module("lib.models.tcmr").TCMR(seqlen=cfg.window, n_layers=cfg.n_layers,
                                                                   hidden_size=cfg.hidden)
        if model == "mpsnet":
            return importlib.import_module("lib.models.mpsnet").MPSnet(seqlen=cfg.window, n_layers=2, hidden_size=1024)
        return importlib.import_module("lib.models.vibe").VIBE(seqlen=cfg.window, n_layers=cfg.n_layers,
                                                               hidden_size=cfg.hidden, add_linear=True,
                                                               use_residual=True)
    finally:
        sys.path.remove(str(root))


def official_net(model: str, root: Path, cfg, ckpt: Path):
    net = official_model(model, root, cfg)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["gen_state_dict"]  # our own file
    result = net.load_state_dict(state, strict=False)  # as the official demos do
    if result.missing_keys:
        raise SystemExit(f"{model}: official model misses keys of our checkpoint: {result.missing_keys[:5]}")
    return net.eval()


def official_outputs(model: str, root: Path, cfg, ckpt: Path, x: torch.Tensor, net=None) -> dict:
    net = net or official_net(model, root, cfg, ckpt)
    with torch.no_grad():
        out = net(x)
        s = (out[0] if isinstance(out, tuple) else out)[-1]
    theta, rotmat = s["theta"], s["rotmat"]
    frames = cfg.window if model == "vibe" else 1
    b = x.shape[0]
    return {"pose_rotmat": rotmat.reshape(b, frames, 24, 3, 3).numpy(),
            "betas": theta[..., 75:].reshape(b, frames, 10).numpy(),
            "cam": theta[..., :3].reshape(b, frames, 3).numpy()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for m in ("tcmr", "mpsnet", "vibe"):
        ap.add_argument(f"--{m}", type=Path, help=f"root of the official {m} repository")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "fixtures")
    args = ap.parse_args(argv)
    from hmr_trt.export.models.temporal import save_trainer_checkpoint

    for model in ("tcmr", "mpsnet", "vibe"):
        root = getattr(args, model)
        if root is None:
            continue
        cfg, ours = seeded_reference(model)
        x = features(model, cfg)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = save_trainer_checkpoint(ours, Path(tmp) / f"{model}.pth.tar")
            net = official_net(model, root, cfg, ckpt)
            official = official_outputs(model, root, cfg, ckpt, x, net)
            if model == "mpsnet":  # the official fusion at batch > 1: windows change with their neighbours
                from hmr_trt.export.models.temporal import random_features

                x3 = random_features(torch.Generator().manual_seed(INPUT_SEED + 1), 3, cfg.window, cfg.feature_dim)
                batched = official_outputs(model, root, cfg, ckpt, x3, net)["betas"]
                alone = np.concatenate([official_outputs(model, root, cfg, ckpt, x3[i:i + 1], net)["betas"]
                                        for i in range(3)])
                print(f"mpsnet official: max |betas at batch 3 - each window alone| {np.abs(batched - alone).max():.2e}")
        with torch.no_grad():
            mine = dict(zip(("pose_rotmat", "betas", "cam"), (t.numpy() for t in ours(x))))
        diffs = {k: float(np.abs(mine[k] - official[k]).max()) for k in official}
        print(f"{model}: max |hmr-trt - official| " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
        args.out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out / f"official_{model}.npz", seed=SEED, input_seed=INPUT_SEED,
                            batch=BATCHES[model], config=json.dumps(cfg.to_dict()), **official)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
