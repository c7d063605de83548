"""One manifest over several trt-build outputs of the same model (one per precision), for trt-bench --export.

trt-build writes one precision per output folder; trt-bench reads the model graph's engines of every
precision from one export manifest (``bench_sections.engines_of``). This writes ``OUT/manifest.json``:
the first folder's manifest (contract, profile, ONNX artifacts) with every folder's engine artifacts,
all paths relative to OUT. Nothing is copied. One line and exit 1 when the folders disagree.
Usage: python tools/engine_sets.py OUT ENGINES_DIR [ENGINES_DIR ...]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

from hmr_trt.errors import HmrTrtError
from hmr_trt.manifest import Manifest


def merge(out: Path, folders: Sequence[Path]) -> Manifest:
    if not folders:
        raise HmrTrtError("give at least one trt-build output folder")
    out = Path(out).absolute()
    manifests = []
    for folder in folders:
        if not (Path(folder) / "manifest.json").is_file():
            raise HmrTrtError(f"{folder}: no manifest.json (a trt-build --out folder)")
        manifests.append((Path(folder).absolute(), Manifest.read(folder)))
    base_dir, base = manifests[0]
    for folder, m in manifests[1:]:
        if (m.model, m.contract) != (base.model, base.contract):
            raise HmrTrtError(f"{folder} holds {m.model}, {base_dir} holds {base.model} (or another contract): "
                              "engine sets must come from exports of the same model")
    out.mkdir(parents=True, exist_ok=True)
    for art in base.artifacts:
        art.path = os.path.relpath(base_dir / art.path, out)
    for folder, m in manifests[1:]:
        for art in m.artifacts:
            if art.kind == "engine":
                art.path = os.path.relpath(folder / art.path, out)
                base.add(art)
    base.notes.append("engines of several trt-build folders: " + ", ".join(str(f) for f, _ in manifests))
    base.write(out)
    return base


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    try:
        merged = merge(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
    except HmrTrtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    engines = sorted({(a.name, a.precision) for a in merged.artifacts if a.kind == "engine"})
    print(f"{sys.argv[1]}/manifest.json: engines " + ", ".join(f"{n} {p}" for n, p in engines))
