"""Regenerate tests/fixtures/decomr_official.npz: the official DecoMR code's outputs on hmr-trt's seeded
weights, so that tests can check hmr-trt's reference against the official code without it.

    git clone https://github.com/zengwang430521/DecoMR /tmp/decomr-official   # never into this repository
    .venv/bin/python tools/decomr_official_parity.py --official /tmp/decomr-official
    .venv/bin/python tools/decomr_official_parity.py --official /tmp/decomr-official --head-gain 64
        # -> tests/fixtures/decomr_official_sensitive.npz: IUV and location heads 16x the seeded gain
    ... --head-gain 64 --out /tmp/d.npz --checkpoint-out /tmp/d/h36m_up3d.pt
        # also keeps the released-format file the official code loaded (for trt-export --checkpoint)

What it does: builds hmr-trt's seeded DecoMR (released config, synthetic UV data), writes its weights
in the released checkpoint format (``CNet``/``LNet`` + optimizer entries, pre-1.6 non-zip) and the
synthetic UV data in DecoMR's ``data/`` layout into a scratch folder, then runs the official ``DMR``
on the CPU from that folder: ``DMR(options, checkpoint)`` loads the file with its own
``load_state_dict`` (strict). Two patches at import time, no behaviour edited: the ImageNet download
of ``resnet50backbone(pretrained=True)`` is skipped (the checkpoint overwrites those weights), and
``F.grid_sample`` is called with ``align_corners=True``, PyTorch 1.1's behaviour under which DecoMR
was trained and released (today's default is False). Writes the official vertices (every 8th), camera,
and the max abs difference against hmr-trt's reference. ``--head-gain`` sets the seeded weights' head gain
(``DecomrConfig.head_gain``; 64: a network whose vertices move centimetres for inputs x (1 +- 1e-4), the
sensitivity of the issue-25 case, where float32 round-off alone moves them by hundredths of a mm); the
fixture records it and that conditioning.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import namedtuple
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "decomr_official.npz"
SENSITIVE_GAIN = 64.0
SENSITIVE_FIXTURE = FIXTURE.with_name("decomr_official_sensitive.npz")
SEED, INPUT_SEED, BATCH, VERTEX_STEP = 0, 1, 2, 8


def official_outputs(official: Path, workdir: Path, checkpoint: Path, images: torch.Tensor):
    sys.path.insert(0, str(official))
    if "tqdm" not in sys.modules:  # uv_generator imports tqdm for a progress bar it never shows here
        import types

        sys.modules["tqdm"] = types.SimpleNamespace(tqdm=lambda it, **kw: it)
    os.chdir(workdir)  # UVNet reads data/BF_ref_map_64.npy relative to the working directory
    import torch.nn.functional as F

    grid_sample = F.grid_sample

    def grid_sample_as_torch_1_1(*args, **kwargs):
        kwargs.setdefault("align_corners", True)
        return grid_sample(*args, **kwargs)

    F.grid_sample = grid_sample_as_torch_1_1
    import models.dense_cnn as dense_cnn
    import models.resnet as resnet

    dense_cnn.resnet50backbone = lambda pretrained=False: resnet.resnet50backbone(pretrained=False)
    import models.uv_generator as uv_generator
    from models.dmr import DMR

    uv_dir = str(workdir / "data" / "uv_sampler")
    base_init = uv_generator.Index_UV_Generator.__init__

    def init_with_data_dir(self, UV_height, UV_width=-1, uv_type="BF", data_dir=None):
        base_init(self, UV_height, UV_width, uv_type, data_dir or uv_dir)

    uv_generator.Index_UV_Generator.__init__ = init_with_data_dir
    keys = ("model", "img_res", "uv_res", "uv_type", "uv_channels", "warp_level", "norm_type")
    options = namedtuple("options", keys)("DecoMR", 224, 128, "BF", 64, 2, "GN")
    model = DMR(options, str(checkpoint)).eval()
    with torch.no_grad():
        out = model(images)
    return out["pred_vertices"].numpy(), out["camera"].numpy()


def write_uv_data_as_decomr(uv, workdir: Path) -> None:
    (workdir / "data" / "uv_sampler").mkdir(parents=True, exist_ok=True)
    n = 128  # the sampler's barycentric tables are unused by resample(); DMR only needs them to load
    np.savez(workdir / "data" / "uv_sampler" / "paras_h0128_w0128_BF.npz",
             v_index=np.zeros((n, n, 3), np.int64), bary_weights=np.zeros((n, n, 3), np.float32),
             texcoords=uv.texcoords, vt2v=uv.vt2v, vt_count=uv.vt_count.astype(np.float64),
             mask=np.zeros((n, n), bool))
    np.save(workdir / "data" / "BF_ref_map_64.npy", uv.ref_map[None])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", required=True, type=Path, help="checkout of zengwang430521/DecoMR")
    ap.add_argument("--head-gain", type=float, default=None,
                    help=f"seeded head gain (default: the config's; {SENSITIVE_GAIN:g}: the sensitive fixture)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: tests/fixtures/decomr_official.npz, _sensitive.npz with --head-gain")
    ap.add_argument("--checkpoint-out", type=Path, default=None,
                    help="also keep the released-format h36m_up3d.pt the official code loaded (e.g. for trt-export)")
    args = ap.parse_args()
    out = args.out or (FIXTURE if args.head_gain is None else SENSITIVE_FIXTURE)
    from hmr_trt.export.models.decomr.adapter import ADAPTER, load_official_checkpoint, save_released_format
    from hmr_trt.export.models.decomr.config import DecomrConfig
    from hmr_trt.export.models.decomr.uv_data import uv_data_from_dir

    cfg = DecomrConfig(seed=SEED, trained_like=False)  # the plain seeded draw (the fixtures were made from it)
    cfg = cfg if args.head_gain is None else replace(cfg, head_gain=args.head_gain)
    images = torch.randn(BATCH, 3, 224, 224, generator=torch.Generator().manual_seed(INPUT_SEED))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seeded = ADAPTER.reference(cfg)
        checkpoint = args.checkpoint_out.resolve() if args.checkpoint_out else work / "h36m_up3d.pt"
        save_released_format(seeded, checkpoint)
        write_uv_data_as_decomr(ADAPTER.uv_data(None), work)
        # hmr-trt through the same files: DecoMR's data/ layout and the released checkpoint format
        ours = ADAPTER.reference(DecomrConfig(seed=SEED + 1), data_dir=work / "data")
        load_official_checkpoint(ours, checkpoint)
        assert uv_data_from_dir(work / "data").num_vertices == ADAPTER.uv_data(None).num_vertices
        sign = torch.randint(0, 2, images.shape, generator=torch.Generator().manual_seed(5)) * 2 - 1
        with torch.no_grad():
            v_ours, c_ours = (t.numpy() for t in ours(images))
            moved = ours(images * (1 + 1e-4 * sign))[0].numpy()
        conditioning = float(np.linalg.norm(moved - v_ours, axis=-1).mean() * 1000)
        cwd = os.getcwd()
        try:
            v_off, c_off = official_outputs(args.official.resolve(), work, checkpoint, images)
        finally:
            os.chdir(cwd)
    print(f"max |vertices - official| = {np.abs(v_ours - v_off).max():.3g}, "
          f"max |cam - official| = {np.abs(c_ours - c_off).max():.3g}, vertex range {np.abs(v_off).max():.3g}")
    print(f"conditioning: inputs x (1 +- 1e-4) move the vertices {conditioning:.3g} mm mean")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, seed=SEED, input_seed=INPUT_SEED, batch=BATCH, vertex_step=VERTEX_STEP, head_gain=cfg.head_gain,
             conditioning_mm=conditioning, vertices=v_off[:, ::VERTEX_STEP].astype(np.float32),
             cam=c_off.astype(np.float32))
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    if args.checkpoint_out:
        print(f"wrote {args.checkpoint_out} ({args.checkpoint_out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
