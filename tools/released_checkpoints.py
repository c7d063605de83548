"""Write checkpoints in the released format and layout of the window models, for ``trt-export --checkpoint``.

Each file holds the model's seeded default weights (the full default config: what ``trt-export --model NAME``
uses without a file) in the layout its official trainer saves, with the same writers the official-parity
tools use (those tools load such files into the official code and compare):

- ``tcmr_demo_model.pth.tar``, ``mpsnet_model_best.pth.tar``, ``vibe_model_wo_3dpw.pth.tar``:
  ``export/models/temporal.py: save_trainer_checkpoint`` (``gen_state_dict`` with the regressor's SMPL
  buffers, a numpy ``performance``, Adam states, the motion discriminator; ``tools/official_parity_peers.py``);
- ``table1_3dpw_weights.pth.tar`` (GLoT): the trainer's save dict with both SMPL buffer copies
  (``glot/checkpoint.py: body_model_placeholders``; ``tools/glot_official_parity.py``);
- ``coseg.pt``: coseg has no public weights, so no released layout; a bare state dict, the simplest of the
  layouts its loader takes (``coseg/model.py: load_checkpoint``), is what a user would hold.

DecoMR and the instance-aware network get their (sensitive) files from their official-parity tools
(``--checkpoint-out``), which run the official code on the very file.

    .venv/bin/python tools/released_checkpoints.py --out /tmp/ckpt [--models coseg,glot,tcmr,mpsnet,vibe]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from hmr_trt import registry

FILES = {"coseg": "coseg.pt", "glot": "table1_3dpw_weights.pth.tar", "tcmr": "tcmr_demo_model.pth.tar",
         "mpsnet": "mpsnet_model_best.pth.tar", "vibe": "vibe_model_wo_3dpw.pth.tar"}


def write_checkpoint(name: str, path: Path) -> Path:
    """The model's default seeded reference written in its released layout at ``path``."""
    adapter = registry.adapter(name)
    model = adapter.reference(adapter.default_config())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if name == "coseg":
        torch.save(state, path)
    elif name == "glot":
        from hmr_trt.export.models.glot.checkpoint import body_model_placeholders

        torch.save({"epoch": 0, "gen_state_dict": {**state, **body_model_placeholders()},
                    "performance": np.float64(42.0), "gen_optimizer": {"state": {}, "param_groups": []}}, path)
    else:
        from hmr_trt.export.models.temporal import save_trainer_checkpoint

        save_trainer_checkpoint(model, path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the files")
    ap.add_argument("--models", default=",".join(FILES), help=f"comma-separated, of {', '.join(FILES)}")
    args = ap.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(FILES))
    if unknown:
        raise SystemExit(f"no released layout written here for {', '.join(unknown)}; choose from {', '.join(FILES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = write_checkpoint(name, args.out / FILES[name])
        reloaded = registry.adapter(name).reference(registry.adapter(name).default_config(), path)  # loads strictly
        print(f"{name}: wrote {path} ({path.stat().st_size / 1e6:.1f} MB; loads: "
              f"{sum(p.numel() for p in reloaded.parameters()) / 1e6:.1f} M parameters)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
