"""Regenerate tests/fixtures/instancehmr_official.npz by running the OFFICIAL instance-aware network code.

    git clone https://github.com/DCVL-3D/InstanceHMR_release /tmp/instancehmr-official   # not in this repo
    .venv/bin/python tools/instancehmr_official_parity.py --official /tmp/instancehmr-official \
        [--out tests/fixtures/instancehmr_official.npz]
    .venv/bin/python tools/instancehmr_official_parity.py --official /tmp/instancehmr-official --gain 1.35
        # -> tests/fixtures/instancehmr_official_sensitive.npz: every weight 1.35x, maps that round-off moves
    ... --gain 1.35 --out /tmp/ih.npz --checkpoint-out /tmp/ih/sensitive.pkl
        # also keeps the released-format file the official code loaded (for trt-export --checkpoint)

What it does, on the CPU:
1. builds hmr-trt's reference at the released eval config (ResNet-50, 512 input, centermap 64, two head
   blocks), fills it with a seeded random state (``random_state``, seed below; ``--gain`` multiplies every
   weight matrix: 1.35 makes a network whose maps move 1e-3 for inputs x (1 +- 1e-4), the sensitivity of
   the issue-25 case, where float32 round-off alone moves meshes by hundredths of a mm) and writes that state as a
   released checkpoint (``model_state_dict`` with ``module.`` keys and an SMPL buffer, ``write_released``);
2. imports the official ``ROMP`` head and ``ResNet_50`` backbone from ``--official/romp/lib`` (its
   argparse ``config`` replaced by the eval values, its training-only imports - loss, result parser with
   the SMPL file, torchvision - replaced by stubs; torchvision's ``normalize`` by the same arithmetic),
   loads the checkpoint the way the official loader does (strip ``module.``; only the SMPL buffers stay
   unused), and runs ``backbone`` then ``head_forward`` on seeded 0-255 images;
3. runs the official center-map parser (``nms``, ``gather_feature`` and
   ``CenterMap.parse_centermap_heatmap_adaptive_scale_batch``, taken from its file) and
   ``ResultParser.parameter_sampling``'s indexing at threshold 0.2;
4. checks hmr-trt's reference and post-processing against them, prints the max abs differences, and
   saves the seeds, the official center and params_maps (camera scale applied, as the
   official head returns it) at 16 seeded pixels, and the official parsed people.
Nothing of the official code is copied into this repository.
"""

from __future__ import annotations

import argparse
import ast
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

STATE_SEED, IMAGE_SEED, PIXEL_SEED, BATCH, PIXELS = 1234, 99, 7, 2, 16
SENSITIVE_GAIN = 1.35
ROOT = Path(__file__).resolve().parents[1]
FIXTURES = {1.0: ROOT / "tests" / "fixtures" / "instancehmr_official.npz",
            SENSITIVE_GAIN: ROOT / "tests" / "fixtures" / "instancehmr_official_sensitive.npz"}


def images(batch: int = BATCH, seed: int = IMAGE_SEED, size: int = 512) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, 32, 32, generator=gen) * 255.0
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return img.permute(0, 2, 3, 1).contiguous()


def pixels(seed: int = PIXEL_SEED, n: int = PIXELS, m: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, m * m, n)


def _functions_from(path: Path, names: set, namespace: dict) -> dict:
    """Exec only the named top-level functions (or class methods, as functions) of an official file."""
    tree = ast.parse(path.read_text())
    nodes = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        nodes += [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in names]
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def official_modules(official: Path):
    lib = official / "romp" / "lib"
    if not (lib / "models" / "romp_model.py").is_file():
        raise SystemExit(f"{official}: no romp/lib/models/romp_model.py; pass the InstanceHMR_release checkout")
    args = types.SimpleNamespace(model_precision="fp32", model_return_loss=False, fine_tune=False, eval=True,
                                 merge_smpl_camera_head=False, centermap_size=64, head_block_num=2,
                                 resnet_pretrain="", max_person=64, centermap_conf_thresh=0.2, kernel_sizes=[5],
                                 input_size=512)
    stubs = {
        "config": types.SimpleNamespace(args=lambda: args),
        "loss_funcs": types.SimpleNamespace(Loss=None),
        "torchvision": types.ModuleType("torchvision"),
        "torchvision.utils": types.SimpleNamespace(draw_bounding_boxes=None, save_image=None),
        "torchvision.models": types.ModuleType("torchvision.models"),
        "torchvision.models.resnet": types.ModuleType("torchvision.models.resnet"),
        "torchvision.transforms": types.ModuleType("torchvision.transforms"),
        "torchvision.transforms.functional": types.SimpleNamespace(
            normalize=lambda x, mean, std, inplace=False: (x - torch.tensor(mean)[:, None, None])
            / torch.tensor(std)[:, None, None]),
    }

    class ResultParser(torch.nn.Module):  # the SMPL wrapper needs the SMPL file; only params_num is read
        def __init__(self):
            super().__init__()
            self.params_map_parser = types.SimpleNamespace(params_num=3 + 6 + 21 * 3 + 10)

    stubs["maps_utils"] = types.ModuleType("maps_utils")
    stubs["maps_utils.result_parser"] = types.SimpleNamespace(ResultParser=ResultParser)
    util = _functions_from(lib / "utils" / "util.py", {"BHWC_to_BCHW"}, {})
    stubs["utils"] = types.SimpleNamespace(BHWC_to_BCHW=util["BHWC_to_BCHW"], copy_state_dict=None,
                                           print_dict=None)
    models = types.ModuleType("models")
    models.__path__ = [str(lib / "models")]  # import submodules without running models/__init__ (all backbones)
    stubs["models"] = models
    for name, mod in stubs.items():
        sys.modules[name] = mod
    import models.resnet_50 as resnet_50
    import models.romp_model as romp_model

    parse = _functions_from(lib / "maps_utils" / "centermap.py",
                            {"nms", "gather_feature", "parse_centermap_heatmap_adaptive_scale_batch"},
                            {"torch": torch, "args": lambda: args})
    return romp_model.ROMP, resnet_50.ResNet_50, parse, args


def official_outputs(official: Path, ckpt: Path, x: torch.Tensor):
    ROMP, ResNet_50, parse, args = official_modules(official)
    model = ROMP(backbone=ResNet_50()).eval()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["model_state_dict"]
    state = {k[len("module."):]: v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    assert not result.missing_keys, result.missing_keys
    assert all(k.startswith("_result_parser.") for k in result.unexpected_keys), result.unexpected_keys
    with torch.no_grad():
        out = model.head_forward(model.backbone(x), None, None, False)
        parser = types.SimpleNamespace(max_person=args.max_person, conf_thresh=args.centermap_conf_thresh,
                                       pool_group={5: torch.nn.MaxPool2d(5, 1, 2)})
        batch_ids, flat, _yxs, score = _parse(parse, parser, out["center_map"])
        maps = out["params_maps"]
        sampled = maps.view(maps.shape[0], maps.shape[1], -1).permute(0, 2, 1)[batch_ids, flat]
    return out, batch_ids, flat, score, sampled


def seeded_state(model: torch.nn.Module, gain: float = 1.0) -> dict:
    """The fixture's checkpoint: ``random_state`` with every weight matrix (dim > 1) times ``gain`` and the
    center head's output conv scaled up so that the seeded images hold people (center scores above 0.2)."""
    from hmr_trt.export.models.instancehmr.checkpoint import random_state

    state = {k: v * gain if v.dim() > 1 and gain != 1.0 else v for k, v in random_state(model, STATE_SEED).items()}
    state["final_layers.1.2.weight"] = state["final_layers.1.2.weight"] * 8.0
    return state


def _parse(parse, parser, center_map):
    fn = parse["parse_centermap_heatmap_adaptive_scale_batch"]
    glb = fn.__globals__
    glb["nms"], glb["gather_feature"] = parse["nms"], parse["gather_feature"]
    return fn(parser, center_map)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help="checkout of DCVL-3D/InstanceHMR_release")
    ap.add_argument("--gain", type=float, default=1.0,
                    help=f"every weight matrix times this ({SENSITIVE_GAIN}: the sensitive fixture)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: tests/fixtures/instancehmr_official.npz, _sensitive.npz for the sensitive gain")
    ap.add_argument("--checkpoint-out", type=Path, default=None,
                    help="also keep the released-format checkpoint the official code loaded (e.g. for trt-export)")
    opts = ap.parse_args()
    out = opts.out or FIXTURES.get(opts.gain) or ROOT / "tests" / "fixtures" / f"instancehmr_official_gain{opts.gain:g}.npz"

    from hmr_trt.export.models.instancehmr.checkpoint import write_released
    from hmr_trt.export.models.instancehmr.config import InstanceHMRConfig
    from hmr_trt.export.models.instancehmr.model import InstanceHMR
    from hmr_trt.export.models.instancehmr.postprocess import postprocess

    cfg = InstanceHMRConfig()
    ours = InstanceHMR(cfg, seeded=False).eval()
    state = seeded_state(ours, opts.gain)
    ours.load_state_dict(state)
    x = images()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_released(opts.checkpoint_out or Path(tmp) / "seeded.pkl", state, smpl={"params_map_parser.smpl_model.v_template":
                                                                    torch.zeros(6890, 3)})
        off, batch_ids, flat, score, sampled = official_outputs(opts.official, ckpt, x)
    with torch.no_grad():
        center, cam, params = ours(x)
        mine = postprocess(center, cam, params, conf_thresh=0.2)
    full = torch.cat((torch.cat((torch.pow(1.1, cam[:, :1]), cam[:, 1:]), 1), params), 1)
    print(f"center_map max|diff| {float((center - off['center_map']).abs().max()):.3g} "
          f"(values std {float(center.std()):.3g})")
    print(f"params_maps (camera scale applied) max|diff| {float((full - off['params_maps']).abs().max()):.3g} "
          f"(values std {float(full.std()):.3g})")
    print(f"people: official {len(score)}, hmr-trt {len(mine['scores'])}; same peaks: "
          f"{torch.equal(mine['batch_ids'], batch_ids)}")
    sign = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        moved = ours(x * (1 + 1e-4 * sign))[2]
    conditioning = float((moved - params).abs().max())
    print(f"conditioning: inputs x (1 +- 1e-4) move params_map by {conditioning:.3g} max abs")
    px = pixels()
    off_maps = off["params_maps"].flatten(2)[:, :, px].numpy()  # (B, 82, PIXELS)
    np.savez_compressed(out, state_seed=STATE_SEED, image_seed=IMAGE_SEED, pixel_seed=PIXEL_SEED, gain=opts.gain,
                        params_map_conditioning=conditioning,
                        center_at_pixels=off["center_map"].flatten(2)[:, :, px].numpy(), params_maps_at_pixels=off_maps,
                        batch_ids=batch_ids.numpy(), flat_inds=flat.numpy(), scores=score.numpy(),
                        params_pred=sampled.numpy())
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    if opts.checkpoint_out:
        print(f"wrote {opts.checkpoint_out} ({opts.checkpoint_out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
