"""Regenerate tests/fixtures/hmr2_official.npz and hmr2_official_tiny.ckpt: the official HMR 2.0 code's
outputs and crops, so that tests can check hmr-trt's model, checkpoint loader and crops against the
official code without it.

    # a checkout of shubham-goel/4D-Humans and its inference dependencies, never in this repository:
    git clone https://github.com/shubham-goel/4D-Humans /tmp/hmr2-official/4D-Humans
    pip install --target /tmp/hmr2-official/site einops yacs timm scikit-image   # with torch + torchvision
    PYTHONPATH=/tmp/hmr2-official/site .venv/bin/python tools/hmr2_official_parity.py \\
        --official /tmp/hmr2-official/4D-Humans

(timm needs a torchvision built for the torch it runs with: the folder's own pair comes first.)

What it does, on the CPU:
1. Builds hmr-trt's seeded HMR 2.0 at the tiny test configuration and writes it as the released files
   are written: a PyTorch Lightning checkpoint (``state_dict`` with the network, a discriminator and
   SMPL buffers beside it; AdamW ``optimizer_states``; loop/callback progress; ``hyper_parameters``
   holding the config as a real yacs ``CfgNode``), kept as the tiny checkpoint fixture.
2. Runs the official modules on that file: ``ViT`` from ``hmr2/models/backbones/vit.py`` (the released
   constructor fixes ViT-H sizes; the class is built at the tiny sizes) and ``SMPLTransformerDecoderHead``
   from ``hmr2/models/heads/smpl_head.py`` with the checkpoint's config, composed as
   ``HMR2.forward_step`` composes them (``x[:, :, :, 32:-32]``, ``pred_cam_t`` at the config's focal
   length) and the token as WHAM's extractor reads it (``smpl_head.transformer`` on the zero token).
   The package ``__init__`` files (Lightning, renderers, SMPL files) are not imported: empty package
   modules stand in for ``hmr2``, ``hmr2.models``, ``hmr2.utils`` and ``hmr2.datasets``.
3. Cuts crops with the official ``ViTDetDataset`` (``hmr2/datasets/vitdet_dataset.py``) from frames of
   the sample video for fixed boxes (one large enough that the demo blurs the frame first).
Prints the largest differences against hmr-trt's reference (loaded from the written file) and crops.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

from hmr_trt.runtime.video import frames_at

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "hmr2_official.npz"
CHECKPOINT = ROOT / "tests" / "fixtures" / "hmr2_official_tiny.ckpt"
VIDEO = ROOT / "data" / "vtest.avi"
SEED, INPUT_SEED, BATCH = 0, 1, 3
# (frame index, box x1 y1 x2 y2): a person, a thin box, a wide box, and a large box partly outside the
# frame (side 800 px: blurred before the crop, black beyond the frame)
CROP_BOXES = ((0, (331.0, 97.5, 417.2, 329.9)), (0, (52.0, 201.0, 118.0, 402.0)),
              (60, (200.3, 300.0, 500.0, 401.7)), (60, (100.0, -20.0, 700.0, 600.0)))


def official_config(cfg, mean_params: Path):
    from yacs.config import CfgNode as CN

    node = CN(new_allowed=True)
    node.merge_from_other_cfg(CN({
        "MODEL": {"IMAGE_SIZE": cfg.image_size, "IMAGE_MEAN": [0.485, 0.456, 0.406],
                  "IMAGE_STD": [0.229, 0.224, 0.225],
                  "BACKBONE": {"TYPE": "vit", "PRETRAINED_WEIGHTS": "hmr2_training_data/vitpose_backbone.pth"},
                  "SMPL_HEAD": {"TYPE": "transformer_decoder", "IN_CHANNELS": 2048, "TRANSFORMER_DECODER": {
                      "depth": cfg.head_depth, "heads": cfg.head_heads, "mlp_dim": cfg.head_mlp,
                      "dim_head": cfg.head_dim_head, "dropout": 0.0, "emb_dropout": 0.0, "norm": "layer",
                      "context_dim": cfg.embed_dim, "dim": cfg.token_dim}}},
        "SMPL": {"DATA_DIR": "data", "MODEL_PATH": "data/smpl", "GENDER": "neutral", "NUM_BODY_JOINTS": 23,
                 "JOINT_REGRESSOR_EXTRA": "data/SMPL_to_J19.pkl", "MEAN_PARAMS": str(mean_params)},
        "EXTRA": {"FOCAL_LENGTH": 5000, "NUM_LOG_IMAGES": 4, "NUM_LOG_SAMPLES_PER_IMAGE": 8, "PELVIS_IND": 39},
        "TRAIN": {"LR": 1e-5, "WEIGHT_DECAY": 1e-4, "BATCH_SIZE": 48},
        "LOSS_WEIGHTS": {"KEYPOINTS_3D": 0.05, "KEYPOINTS_2D": 0.01, "GLOBAL_ORIENT": 0.001, "BODY_POSE": 0.001,
                         "BETAS": 0.0005, "ADVERSARIAL": 0.0005},
    }))
    node.freeze()
    return node


def write_released_format(model, yacs_cfg, path: Path) -> None:
    """The network's weights as the Lightning trainer saved HMR 2.0, with the parts the loader drops."""
    gen = torch.Generator().manual_seed(7)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state.update({"discriminator.D_conv1.weight": torch.randn(32, 9, 1, 1, generator=gen),
                  "discriminator.D_conv1.bias": torch.zeros(32),
                  "discriminator.betas_out.weight": torch.randn(1, 5, generator=gen),
                  "smpl.v_template": torch.randn(16, 3, generator=gen), "smpl.shapedirs": torch.randn(16, 3, 10),
                  "smpl.J_regressor": torch.rand(24, 16), "smpl.joint_map": torch.arange(25),
                  "initialized": torch.tensor(True)})
    params = [v for k, v in state.items() if k.startswith(("backbone.", "smpl_head.")) and v.is_floating_point()]
    adam = {"state": {i: {"step": torch.tensor(1000000.0), "exp_avg": torch.zeros_like(p),
                          "exp_avg_sq": torch.zeros_like(p)} for i, p in enumerate(params[:3])},
            "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-4,
                              "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
                              "differentiable": False, "fused": None, "params": list(range(len(params)))}]}
    torch.save({"epoch": 35, "global_step": 1000000, "pytorch-lightning_version": "2.0.1",
                "state_dict": state, "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {
                    "total": {"ready": 36, "completed": 35}, "current": {"ready": 36, "completed": 35}}}},
                "callbacks": {"ModelCheckpoint{'monitor': None, 'mode': 'min'}": {
                    "best_model_score": None, "best_model_path": "", "dirpath": "checkpoints"}},
                "optimizer_states": [adam, adam], "lr_schedulers": [], "hparams_name": "kwargs",
                "hyper_parameters": {"cfg": yacs_cfg}}, str(path))


def import_official(official: Path, site: Path | None):
    if site is not None:
        sys.path.append(str(site))
    for name in ("hmr2", "hmr2.models", "hmr2.utils", "hmr2.datasets"):
        module = types.ModuleType(name)
        module.__path__ = [str(official / name.replace(".", "/"))]
        sys.modules[name] = module
    from hmr2.datasets.vitdet_dataset import ViTDetDataset
    from hmr2.models.backbones.vit import ViT
    from hmr2.models.heads.smpl_head import SMPLTransformerDecoderHead

    return ViT, SMPLTransformerDecoderHead, ViTDetDataset


def official_outputs(ViT, Head, cfg, yacs_cfg, checkpoint: Path, images: torch.Tensor) -> dict:
    import einops

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]  # our own file
    backbone = ViT(img_size=(cfg.image_size, cfg.width), patch_size=cfg.patch, embed_dim=cfg.embed_dim,
                   depth=cfg.depth, num_heads=cfg.heads, ratio=1, use_checkpoint=False, mlp_ratio=cfg.mlp_ratio,
                   qkv_bias=True, drop_path_rate=0.55)
    head = Head(yacs_cfg)
    for prefix, module in (("backbone.", backbone), ("smpl_head.", head)):
        module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
        module.eval()
    with torch.no_grad():
        feats = backbone(images[:, :, :, 32:-32])
        params, cam, _ = head(feats)
        f = yacs_cfg.EXTRA.FOCAL_LENGTH
        cam_t = torch.stack([cam[:, 1], cam[:, 2], 2 * f / (yacs_cfg.MODEL.IMAGE_SIZE * cam[:, 0] + 1e-9)], dim=-1)
        context = einops.rearrange(feats, "b c h w -> b (h w) c")
        token = head.transformer(torch.zeros(images.shape[0], 1, 1), context=context).squeeze(1)
    rotmat = torch.cat([params["global_orient"], params["body_pose"]], dim=1)
    return {"pose_rotmat": rotmat, "betas": params["betas"], "cam": cam, "cam_t": cam_t, "token": token}


def official_crops(Dataset, yacs_cfg, frames: dict) -> list:
    crops = []
    for frame_index, box in CROP_BOXES:
        item = Dataset(yacs_cfg, frames[frame_index], np.array([box], np.float32))[0]
        mean, std = 255.0 * np.array(yacs_cfg.MODEL.IMAGE_MEAN), 255.0 * np.array(yacs_cfg.MODEL.IMAGE_STD)
        pixels = item["img"] * std[:, None, None] + mean[:, None, None]  # back to 0-255 RGB, (3, S, S)
        crops.append((item["img"].astype(np.float32), pixels, float(item["box_size"]), item["box_center"]))
    return crops


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", required=True, type=Path, help="checkout of shubham-goel/4D-Humans")
    ap.add_argument("--site", type=Path, help="folder with einops, yacs, timm, scikit-image (pip --target)")
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--out", type=Path, default=FIXTURE)
    ap.add_argument("--checkpoint-out", type=Path, default=CHECKPOINT)
    args = ap.parse_args()
    ViT, Head, Dataset = import_official(args.official.resolve(), args.site)
    from hmr_trt.export.models.hmr2.adapter import ADAPTER
    from hmr_trt.runtime.crops import crop_from_frame, normalise_crops, square_box

    cfg = ADAPTER.tiny_config()
    seeded = ADAPTER.reference(cfg)
    images = torch.randn(BATCH, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(INPUT_SEED))
    with tempfile.TemporaryDirectory() as tmp:
        mean_params = Path(tmp) / "smpl_mean_params.npz"
        head = seeded.smpl_head
        np.savez(mean_params, pose=head.init_body_pose[0].numpy(), shape=head.init_betas[0].numpy(),
                 cam=head.init_cam[0].numpy())
        yacs_cfg = official_config(cfg, mean_params)
        args.checkpoint_out.parent.mkdir(parents=True, exist_ok=True)
        write_released_format(seeded, yacs_cfg, args.checkpoint_out)
        official = official_outputs(ViT, Head, cfg, yacs_cfg, args.checkpoint_out, images)
    import dataclasses

    ours_model = ADAPTER.reference(dataclasses.replace(cfg, seed=SEED + 1), args.checkpoint_out)
    from hmr_trt.export.models.hmr2.model import crop_translation

    with torch.no_grad():
        ours = dict(zip(ADAPTER.contract_for(cfg).model_graph.output_names, ours_model(images)))
    ours["cam_t"] = crop_translation(ours["cam"], cfg.focal_length, cfg.image_size)  # the host's, from cam
    for name, value in official.items():
        print(f"max |{name} - official| = {float((ours[name] - value).abs().max()):.3g} "
              f"(range {float(value.abs().max()):.3g})")
    frames = frames_at(args.video, {f for f, _ in CROP_BOXES})
    crops = official_crops(Dataset, yacs_with_bbox(yacs_cfg), frames)
    for (frame_index, box), (img, _, size, _centre) in zip(CROP_BOXES, crops):
        square = square_box(np.array(box), 1.0, 192 / 256)
        mine = normalise_crops(crop_from_frame(frames[frame_index], square, 256, antialias=True)[None])[0]
        print(f"crop {box}: side {size:.2f} (ours {float(square[2] - square[0]):.2f}), "
              f"max |normalised - official| = {np.abs(mine - img).max():.3g}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"official/{k}": v.numpy().astype(np.float32) for k, v in official.items()}
    for i, (_, pixels, size, centre) in enumerate(crops):
        whole = np.allclose(pixels, np.round(pixels), atol=1e-3)  # unblurred crops are whole gray levels
        arrays[f"crop{i}/pixels"] = (np.round(pixels).astype(np.uint8) if whole else pixels.astype(np.float32))
        arrays[f"crop{i}/box_size"] = np.float64(size)
        arrays[f"crop{i}/box_center"] = np.asarray(centre, np.float64)
    np.savez_compressed(args.out, seed=SEED, input_seed=INPUT_SEED, batch=BATCH,
                        boxes=np.array([b for _, b in CROP_BOXES], np.float32),
                        frames=np.array([f for f, _ in CROP_BOXES]), **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), {args.checkpoint_out} "
          f"({args.checkpoint_out.stat().st_size} bytes)")
    return 0


def yacs_with_bbox(yacs_cfg):
    """``load_hmr2`` adds MODEL.BBOX_SHAPE [192, 256] for ViT backbones before the demo crops."""
    node = yacs_cfg.clone()
    node.defrost()
    node.MODEL.BBOX_SHAPE = [192, 256]
    node.freeze()
    return node


if __name__ == "__main__":
    raise SystemExit(main())
