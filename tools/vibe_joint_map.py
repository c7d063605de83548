"""Regenerate tests/fixtures/vibe_joint_map.json from the official ``lib/models/smpl.py`` of mkocabas/VIBE.

The demos' 49 joints (``runtime/vibe_format.py: PEER_JOINTS``) are VIBE's joint names and their rows in smplx's
joints followed by the extra regressor's; this reads both lists from the official file as data (the module
is parsed, not imported: it imports torch and VIBE's config) and writes them as JSON, so that the test of
the runtime's table runs without the official repository.

    .venv/bin/python tools/vibe_joint_map.py CHECKOUT_OF_mkocabas/VIBE [--revision COMMIT] [--out tests/fixtures/vibe_joint_map.json]
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import typer

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "vibe_joint_map.json"


def official_joint_map(checkout: Path) -> dict:
    """``{"joint_names": [...49], "joint_map": {name: row}}`` as assigned in the checkout's lib/models/smpl.py."""
    path = Path(checkout) / "lib" / "models" / "smpl.py"
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in ("JOINT_NAMES", "JOINT_MAP"):
            found[node.targets[0].id] = ast.literal_eval(node.value)
    if set(found) != {"JOINT_NAMES", "JOINT_MAP"}:
        raise ValueError(f"{path}: no JOINT_NAMES / JOINT_MAP assignments")
    return {"joint_names": list(found["JOINT_NAMES"]), "joint_map": dict(found["JOINT_MAP"])}


def main(checkout: Path, out: Path = typer.Option(FIXTURE, help="Where the JSON goes."),
         revision: str = typer.Option("", help="The checkout's commit, recorded in the file.")) -> None:
    at = f" at {revision}" if revision else ""
    data = {"source": f"mkocabas/VIBE{at} lib/models/smpl.py (JOINT_NAMES, JOINT_MAP), read by tools/vibe_joint_map.py",
            **official_joint_map(checkout)}
    out.write_text(json.dumps(data, indent=1) + "\n")
    typer.echo(f"{out}: {len(data['joint_names'])} joint names")


if __name__ == "__main__":
    sys.exit(typer.run(main))
