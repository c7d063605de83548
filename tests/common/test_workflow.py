"""The CI workflow is valid YAML and every `make` target it names exists in the Makefile."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def makefile_targets() -> set[str]:
    """Targets with a rule (a recipe or prerequisites), as make itself sees them (`make -qp`).

    A name only listed in .PHONY has neither, so it does not count.
    """
    out = subprocess.run(["make", "-qp", "-f", "Makefile"], cwd=ROOT, capture_output=True, text=True).stdout
    targets = set()
    for block in out.split("\n\n"):
        m = re.match(r"^([A-Za-z0-9_.\-/]+):(?!=)(.*)$", block.strip(), re.MULTILINE)
        if m and (m.group(2).strip() or "recipe to execute" in block):
            targets.add(m.group(1))
    return targets


def workflow_make_targets(doc: dict) -> list[tuple[str, str]]:
    found = []
    for job_name, job in doc["jobs"].items():
        for step in job.get("steps", []):
            for cmd in re.findall(r"\bmake\s+([A-Za-z0-9_\-]+)", step.get("run", "")):
                found.append((job_name, cmd))
    return found


def test_workflow_is_valid_yaml_with_cpu_and_gpu_jobs() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text())
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on:` as the boolean True
    assert "push" in triggers and "pull_request" in triggers
    assert set(doc["jobs"]) >= {"cpu", "gpu"}
    assert "self-hosted" in str(doc["jobs"]["gpu"]["runs-on"])
    assert doc["jobs"]["gpu"]["needs"] == "cpu"


def test_workflow_targets_exist_in_the_makefile() -> None:
    targets = makefile_targets()
    named = workflow_make_targets(yaml.safe_load(WORKFLOW.read_text()))
    assert ("cpu", "test") in named and ("gpu", "test-gpu") in named
    missing = [(job, t) for job, t in named if t not in targets]
    assert not missing, f"workflow names make targets the Makefile lacks: {missing}"


def test_ci_entry_point_runs_make_test() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
