"""Regenerate tests/fixtures/vitpose_official.npz (and vitpose_official_tiny.pth): the official ViTPose code's
crops, decoded keypoints and network outputs, so that tests check hmr-trt's ViTPose-H against it without it.

    # the official repository, never in this one (mmcv and mmpose 0.x are not installable here):
    mkdir -p /tmp/vitpose24 && git -C <ViTAE-Transformer/ViTPose checkout> archive --prefix=ViTPose/ HEAD \\
        mmpose configs | tar -x -C /tmp/vitpose24
    PYTHONPATH=/tmp/hmr2-official/site .venv/bin/python tools/vitpose_official_parity.py \\
        --official /tmp/vitpose24/ViTPose           # the site folder: torch, torchvision and timm

What runs, on the CPU, is the repository's own files, loaded one by one: ``mmpose/apis/inference.py``
(``_box2cs``: box -> centre and scale), ``mmpose/datasets/pipelines/loading.py``, ``top_down_transform.py``
and ``shared_transform.py`` (``LoadImageFromFile``, ``TopDownAffine(use_udp=True)``, ``ToTensor``,
``NormalizeTensor``: the config's test pipeline), ``mmpose/core/post_processing/post_transforms.py`` and
``mmpose/core/evaluation/top_down_eval.py`` (``flip_back``, ``keypoints_from_heatmaps``). The package
``__init__`` files are not imported (they pull in the whole of mmpose, mmcv and its CUDA ops): empty
modules stand in for the packages, and the few mmcv / registry names the loaded files import are stubs
outside the arithmetic (registry decorators that return the class, ``FileClient``/``DataContainer``
placeholders never reached on this path) except ``mmcv.bgr2rgb``, which is what mmcv's is
(``cv2.cvtColor(img, cv2.COLOR_BGR2RGB)``).

Fixture contents (small): for fixed boxes on frames of data/vtest.avi, the official normalised crops at every
4th pixel of each axis, the official centre, scale and frame -> crop map; for
synthetic heatmaps (Gaussian blobs, maxima at the borders, a map with no positive value), the official
keypoints decoded with the config's test_cfg (use_udp, post_process 'default', modulate_kernel 11).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np

from hmr_trt.runtime.video import frames_at

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "vitpose_official.npz"
CHECKPOINT = ROOT / "tests" / "fixtures" / "vitpose_official_tiny.pth"
VIDEO = ROOT / "data" / "vtest.avi"
CONFIG = "configs/body/2d_kpt_sview_rgb_img/topdown_heatmap/coco/ViTPose_huge_coco_256x192.py"
# (frame index, box x1 y1 x2 y2) in the detector's float32 xyxy: a walking person, a tall thin box (widened
# to 3:4), a wide box (heightened), a box partly outside the frame (black beyond it)
CROP_BOXES = ((0, (331.0, 97.5, 417.2, 329.9)), (0, (52.0, 201.0, 118.0, 402.0)),
              (60, (200.3, 300.0, 500.0, 401.7)), (60, (600.0, -40.0, 820.0, 380.0)))
CROP_STRIDE = 4  # the normalised crops are kept at every 4th pixel of each axis
HEATMAP_SEED = 3
HEATMAP_STRIDE = 4  # the tiny network's official heatmaps are kept at every 4th cell of each axis


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so that submodules can be registered under it
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def _load(official: Path, name: str) -> types.ModuleType:
    """The official file of module ``name`` (a dotted path under the checkout), executed as that module."""
    path = official / (name.replace(".", "/") + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _Registry:
    """Stands in for mmcv's Registry: ``register_module()`` returns the class unchanged."""

    def register_module(self, *args, **kwargs):
        return (lambda cls: cls) if not args or not isinstance(args[0], type) else args[0]


def import_official(official: Path) -> types.SimpleNamespace:
    """Load the official files the test pipeline, decoding and network run (see the module docstring)."""
    import cv2
    import torch

    def unused(*args, **kwargs):
        raise RuntimeError("stub reached: the official path was expected not to call it")

    class FileClient:  # built by LoadImageFromFile, read only for a file name (the frame arrives as an array)
        def __init__(self, **kwargs) -> None:
            pass

    _stub("mmcv", bgr2rgb=lambda img: cv2.cvtColor(img, cv2.COLOR_BGR2RGB), FileClient=FileClient, Config=unused)
    _stub("mmcv.parallel", DataContainer=unused, collate=unused, scatter=unused)
    _stub("mmcv.utils", build_from_cfg=unused)
    _stub("mmcv.runner", load_checkpoint=unused)
    _stub("mmcv_custom")
    _stub("mmcv_custom.checkpoint", load_checkpoint=unused)
    for name in ("mmpose", "mmpose.core", "mmpose.core.post_processing", "mmpose.core.evaluation", "mmpose.apis",
                 "mmpose.datasets", "mmpose.datasets.pipelines", "mmpose.models", "mmpose.models.backbones",
                 "mmpose.models.heads", "mmpose.models.utils", "mmpose.utils"):
        _stub(name)
    _stub("mmpose.datasets.builder", PIPELINES=_Registry())
    _stub("mmpose.models.builder", BACKBONES=_Registry(), HEADS=_Registry(), build_loss=lambda cfg: None)
    post = _load(official, "mmpose.core.post_processing.post_transforms")
    sys.modules["mmpose.core.post_processing"].__dict__.update(
        {k: v for k, v in vars(post).items() if not k.startswith("__")}, oks_nms=unused)
    evaluation = _load(official, "mmpose.core.evaluation.top_down_eval")
    sys.modules["mmpose.core.evaluation"].__dict__.update(
        {k: v for k, v in vars(evaluation).items() if not k.startswith("__")})
    _stub("mmpose.datasets.dataset_info", DatasetInfo=unused)
    _stub("mmpose.datasets.pipelines", Compose=unused)
    _stub("mmpose.models", build_posenet=unused)
    _stub("mmpose.utils.hooks", OutputHook=unused)
    _stub("PIL", Image=None) if "PIL" not in sys.modules and importlib.util.find_spec("PIL") is None else None
    _stub("mmcv.cnn", build_conv_layer=lambda cfg, *a, **k: torch.nn.Conv2d(*a, **k),
          build_upsample_layer=lambda cfg, *a, **k: torch.nn.ConvTranspose2d(*a, **k),
          build_norm_layer=unused, constant_init=unused, normal_init=unused)
    _stub("mmpose.models.utils.ops", resize=unused)
    inference = _load(official, "mmpose.apis.inference")
    loading = _load(official, "mmpose.datasets.pipelines.loading")
    top_down = _load(official, "mmpose.datasets.pipelines.top_down_transform")
    shared = _load(official, "mmpose.datasets.pipelines.shared_transform")
    _load(official, "mmpose.models.backbones.base_backbone")
    vit = _load(official, "mmpose.models.backbones.vit")
    _load(official, "mmpose.models.heads.topdown_heatmap_base_head")
    head = _load(official, "mmpose.models.heads.topdown_heatmap_simple_head")
    return types.SimpleNamespace(post=post, eval=evaluation, inference=inference, loading=loading,
                                 top_down=top_down, shared=shared, ViT=vit.ViT,
                                 Head=head.TopdownHeatmapSimpleHead)


def read_config(official: Path) -> dict:
    """The ViTPose-H COCO config's plain dicts (its ``_base_`` files are not needed for these fields)."""
    text = (official / CONFIG).read_text()
    namespace: dict = {}
    exec(compile(text.replace("{{_base_.dataset_info}}", "None"), CONFIG, "exec"), namespace)  # our checkout's file
    return namespace


def official_crops(off, config: dict, frames: dict) -> list:
    """Each box through ``_box2cs`` and the config's test pipeline, as ``inference_top_down_pose_model``
    with ``format='xyxy'`` feeds it (the frame as a BGR array)."""
    data_cfg = types.SimpleNamespace(data_cfg=config["data_cfg"])
    steps = [off.loading.LoadImageFromFile(), off.top_down.TopDownAffine(use_udp=True)]
    to_tensor, normalise = off.shared.ToTensor(), off.shared.NormalizeTensor(**{
        k: v for k, v in config["val_pipeline"][3].items() if k != "type"})
    out = []
    for frame_index, box in CROP_BOXES:
        xywh = off.inference._xyxy2xywh(np.array([box], np.float32))[0]
        center, scale = off.inference._box2cs(data_cfg, xywh)
        results = {"img": frames[frame_index].copy(), "center": center, "scale": scale, "rotation": 0,
                   "joints_3d": np.zeros((17, 3), np.float32), "joints_3d_visible": np.zeros((17, 3), np.float32),
                   "ann_info": {"image_size": np.array(config["data_cfg"]["image_size"]), "num_joints": 17}}
        for step in steps:
            results = step(results)
        warped = results["img"].copy()  # (256, 192, 3) RGB uint8
        normalised = normalise(to_tensor(results))["img"].numpy()
        trans = off.post.get_warp_matrix(0, center * 2.0, np.array(config["data_cfg"]["image_size"]) - 1.0,
                                         scale * 200.0)
        out.append({"warped": warped, "normalised": normalised, "center": center, "scale": scale, "trans": trans})
    return out


def synthetic_heatmaps(n: int = 3) -> np.ndarray:
    """Gaussian blobs (sigma 2, as the training targets) at random sub-pixel places, tails below 1e-3 cut;
    person 0 keypoint 0 peaks on the border, keypoint 1 next to it; person 1 keypoint 2 has no positive
    value; person 2 keypoint 3 is flat zero. Rounded to float16 (the fixture stores them so)."""
    rng = np.random.default_rng(HEATMAP_SEED)
    h, w = 64, 48
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    maps = np.zeros((n, 17, h, w))
    for i in range(n):
        for k in range(17):
            cx, cy = rng.uniform(2, w - 3), rng.uniform(2, h - 3)
            amp = rng.uniform(0.3, 1.0)
            maps[i, k] = amp * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 2.0 ** 2))
    maps[0, 0] = 0.8 * np.exp(-((xx - 0) ** 2 + (yy - 30.3) ** 2) / 8.0)
    maps[0, 1] = 0.8 * np.exp(-((xx - 46.6) ** 2 + (yy - 1.2) ** 2) / 8.0)
    maps[1, 2] = -np.abs(maps[1, 2]) - 0.01
    maps[2, 3] = 0.0
    maps[np.abs(maps) < 1e-3] = 0.0  # tails cut: the fixture stays small
    return maps.astype(np.float16)


def official_keypoints(off, config: dict, heatmaps: np.ndarray, crops: list) -> np.ndarray:
    """``keypoints_from_heatmaps`` with the config's test_cfg, as the head's ``decode`` calls it."""
    test_cfg = config["model"]["test_cfg"]
    center = np.stack([c["center"] for c in crops[:len(heatmaps)]])
    scale = np.stack([c["scale"] for c in crops[:len(heatmaps)]])
    preds, maxvals = off.eval.keypoints_from_heatmaps(
        heatmaps.astype(np.float32), center, scale, unbiased=test_cfg.get("unbiased_decoding", False),
        post_process=test_cfg.get("post_process", "default"), kernel=test_cfg.get("modulate_kernel", 11),
        valid_radius_factor=test_cfg.get("valid_radius_factor", 0.0546875), use_udp=test_cfg.get("use_udp", False),
        target_type=test_cfg.get("target_type", "GaussianHeatmap"))
    return np.concatenate([preds, maxvals], axis=-1).astype(np.float32)


def write_released_format(model, config_text: str, path: Path) -> None:
    """The network's weights as mmcv's ``save_checkpoint`` writes them (``meta``, ``state_dict``), with the
    parts a split multi-dataset checkpoint keeps beside the COCO model: backbone MLP experts and the other
    datasets' heads (``tools/model_split.py`` leaves both in)."""
    from collections import OrderedDict

    import torch

    gen = torch.Generator().manual_seed(11)
    state = OrderedDict((k, v.clone()) for k, v in model.state_dict().items())
    hidden = model.cfg.embed_dim * model.cfg.mlp_ratio
    for i in range(model.cfg.depth):
        for e in range(2):
            state[f"backbone.blocks.{i}.mlp.experts.{e}.weight"] = torch.randn(8, hidden, generator=gen)
            state[f"backbone.blocks.{i}.mlp.experts.{e}.bias"] = torch.randn(8, generator=gen)
    for h, joints in enumerate((14, 16)):  # AIC, MPII
        for k, v in model.state_dict().items():
            if k.startswith("keypoint_head."):
                other = v.clone() if v.dtype != torch.float32 else torch.randn(v.shape, generator=gen)
                if k.startswith("keypoint_head.final_layer."):
                    other = other[:joints]
                state[k.replace("keypoint_head.", f"associate_keypoint_heads.{h}.")] = other
    meta = {"mmcv_version": "1.3.9", "time": "Thu Jun  2 10:00:00 2022", "config": config_text, "epoch": 210,
            "iter": 0, "env_info": "seeded by hmr-trt tools/vitpose_official_parity.py", "seed": 0}
    torch.save({"meta": meta, "state_dict": state}, path)


def official_heatmaps_and_keypoints(off, cfg, config: dict, checkpoint: Path, crops: list):
    """The official ``ViT`` and ``TopdownHeatmapSimpleHead`` at ``cfg``'s sizes (the config's other values),
    loaded from ``checkpoint`` as mmcv's ``load_checkpoint`` does (non-strict: the other parts unused) and
    composed as ``TopDown.forward_test`` composes them: flip test, then the head's ``decode``."""
    import torch

    m = config["model"]
    bb = dict(m["backbone"], embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.heads)
    bb.pop("type")
    hd = dict(m["keypoint_head"], in_channels=cfg.embed_dim,
              num_deconv_filters=(cfg.deconv_filters,) * cfg.deconv_layers, test_cfg=m["test_cfg"])
    hd.pop("type")
    net = torch.nn.Module()
    net.backbone, net.keypoint_head = off.ViT(**bb), off.Head(**hd)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]  # our own file
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or any(not k.startswith(("associate_keypoint_heads.", "backbone.blocks."))
                                  or (k.startswith("backbone.blocks.") and ".mlp.experts." not in k)
                                  for k in result.unexpected_keys):
        raise SystemExit(f"official load: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    net.eval()
    img = torch.from_numpy(np.stack([c["normalised"] for c in crops]))
    # no "bbox_score": decode writes it into a float with a (1,)-array, which numpy 2 refuses; it only fills
    # the result's box score, not the keypoints
    metas = [{"center": c["center"], "scale": c["scale"], "image_file": None, "bbox_id": i,
              "flip_pairs": [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]]}
             for i, c in enumerate(crops)]
    with torch.no_grad():
        heat = net.keypoint_head.inference_model(net.backbone(img), flip_pairs=None)
        if m["test_cfg"].get("flip_test", True):
            flipped = net.keypoint_head.inference_model(net.backbone(img.flip(3)), metas[0]["flip_pairs"])
            heat = (heat + flipped) * 0.5
    result = net.keypoint_head.decode(metas, heat, img_size=[img.shape[3], img.shape[2]])
    return heat.astype(np.float32), result["preds"].astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", required=True, type=Path, help="extracted ViTAE-Transformer/ViTPose tree")
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--out", type=Path, default=FIXTURE)
    ap.add_argument("--checkpoint-out", type=Path, default=CHECKPOINT)
    args = ap.parse_args()
    official = args.official.resolve()
    off = import_official(official)
    config = read_config(official)
    from hmr_trt.runtime.keypoints import decode_heatmaps, topdown_crop

    frames = frames_at(args.video, {f for f, _ in CROP_BOXES})
    crops = official_crops(off, config, frames)
    arrays: dict = {}
    ours_trans = []
    for i, ((frame_index, box), c) in enumerate(zip(CROP_BOXES, crops)):
        mine, trans = topdown_crop(frames[frame_index], np.array(box, np.float32))
        ours_trans.append(trans)
        print(f"crop {box}: max |normalised - official| = {np.abs(mine - c['normalised']).max():.3g}, "
              f"max |trans - official| = {np.abs(trans - c['trans']).max():.3g}")
        arrays[f"crop{i}/normalised_strided"] = c["normalised"][:, ::CROP_STRIDE, ::CROP_STRIDE].astype(np.float32)
        arrays[f"crop{i}/center"] = c["center"]
        arrays[f"crop{i}/scale"] = c["scale"]
        arrays[f"crop{i}/trans"] = c["trans"].astype(np.float32)
    heatmaps = synthetic_heatmaps()
    keypoints = official_keypoints(off, config, heatmaps, crops)
    mine = decode_heatmaps(heatmaps.astype(np.float32), np.stack(ours_trans[:len(heatmaps)]))
    print(f"synthetic heatmaps: max |keypoint xy - official| = {np.abs(mine[..., :2] - keypoints[..., :2]).max():.3g} px, "
          f"max |score - official| = {np.abs(mine[..., 2] - keypoints[..., 2]).max():.3g}")

    import dataclasses

    import torch

    from hmr_trt.export.models.vitpose.adapter import ADAPTER

    cfg = ADAPTER.tiny_config()
    args.checkpoint_out.parent.mkdir(parents=True, exist_ok=True)
    write_released_format(ADAPTER.reference(cfg), (official / CONFIG).read_text(), args.checkpoint_out)
    official_heat, official_kp = official_heatmaps_and_keypoints(off, cfg, config, args.checkpoint_out, crops)
    ours_model = ADAPTER.reference(dataclasses.replace(cfg, seed=cfg.seed + 1), args.checkpoint_out)
    ours_crops = np.stack([topdown_crop(frames[f], np.array(b, np.float32))[0] for f, b in CROP_BOXES])
    with torch.no_grad():
        ours_heat = ours_model(torch.from_numpy(ours_crops))[0].numpy()
    ours_kp = decode_heatmaps(ours_heat, np.stack(ours_trans))
    print(f"tiny network on {len(CROP_BOXES)} real crops: max |heatmaps - official| = "
          f"{np.abs(ours_heat - official_heat).max():.3g} (range {np.abs(official_heat).max():.3g}); max |keypoint xy - "
          f"official| = {np.abs(ours_kp[..., :2] - official_kp[..., :2]).max():.3g} px, max |score - official| = "
          f"{np.abs(ours_kp[..., 2] - official_kp[..., 2]).max():.3g}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, boxes=np.array([b for _, b in CROP_BOXES], np.float32),
                        frames=np.array([f for f, _ in CROP_BOXES]), crop_stride=CROP_STRIDE,
                        synthetic_heatmaps=heatmaps, synthetic_keypoints=keypoints,
                        tiny_heatmaps_strided=official_heat[:, :, ::HEATMAP_STRIDE, ::HEATMAP_STRIDE],
                        tiny_heatmap_max_abs=np.abs(official_heat).max(axis=(2, 3)),
                        tiny_keypoints=official_kp, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), {args.checkpoint_out} "
          f"({args.checkpoint_out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
