"""The benchmark: round-robin timing with a recording fake clock, noisy rows, goals on the minimum, and a
tiny end-to-end run on a toy model registered in place of the real ones (no model's adapter needed)."""

from __future__ import annotations

import json

import pytest
import torch

from hmr_trt import registry
from hmr_trt.contract import GraphSpec, ModelContract, TensorSpec
from hmr_trt.errors import ConfigError
from hmr_trt.export.bench import parse_models, run_bench
from hmr_trt.export.bench_report import BenchResult, evaluate_goals, write_report
from hmr_trt.export.bench_timing import RoundRobin, System, Timing, percentile, round_robin, time_systems


class FakeClock:
    """A clock that only moves when a system runs: each call of a system advances it by that system's
    next duration; every call is recorded in order."""

    def __init__(self, durations_ms: dict) -> None:
        self.now = 0.0
        self.durations = {name: list(d) for name, d in durations_ms.items()}
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def system(self, name: str) -> System:
        def run() -> None:
            self.calls.append(name)
            self.now += self.durations[name].pop(0) / 1000.0

        return System(name, run)


def test_systems_are_measured_in_alternation_not_one_after_another() -> None:
    clock = FakeClock({n: [1.0] * 20 for n in "ABC"})
    samples = round_robin([clock.system(n) for n in "ABC"], RoundRobin(warmup=2, min_reps=4, budget_s=0), clock)
    assert clock.calls == list("ABC") * 6  # 2 warm-up rounds, then 4 measured rounds, one call of each per round
    assert {n: len(s) for n, s in samples.items()} == {"A": 4, "B": 4, "C": 4}


def test_samples_are_each_systems_own_calls() -> None:
    clock = FakeClock({"A": [9, 1, 2, 3], "B": [9, 10, 30, 20]})
    samples = round_robin([clock.system("A"), clock.system("B")], RoundRobin(warmup=1, min_reps=3, budget_s=0), clock)
    assert samples == {"A": pytest.approx([1, 2, 3]), "B": pytest.approx([10, 30, 20])}  # warm-up (9 ms) dropped


def test_rounds_go_on_until_the_budget_then_stop_at_max_reps() -> None:
    clock = FakeClock({"A": [10.0] * 100})
    timed = round_robin([clock.system("A")], RoundRobin(warmup=0, min_reps=2, max_reps=50, budget_s=0.055), clock)
    assert len(timed["A"]) == 6  # 10 ms rounds: after 6 the 55 ms budget is spent
    clock = FakeClock({"A": [10.0] * 100})
    assert len(round_robin([clock.system("A")], RoundRobin(0, 2, 4, 10.0), clock)["A"]) == 4


def test_bad_round_robin_settings_and_repeated_names() -> None:
    with pytest.raises(ConfigError, match="min_reps <= max_reps"):
        RoundRobin(min_reps=5, max_reps=2)
    clock = FakeClock({"A": [1.0] * 4})
    with pytest.raises(ConfigError, match="system names repeat"):
        round_robin([clock.system("A"), clock.system("A")], RoundRobin(0, 1, 1, 0), clock)


def test_minimum_median_and_p90() -> None:
    t = Timing("m", "g", "s", 2, [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 6.0, 7.0, 8.0, 9.0])
    assert (t.min_ms, t.median_ms, t.p90_ms, t.runs) == (1.0, 5.5, 9.0, 10)
    assert t.per_item_ms == 0.5 and t.items_per_s == 2000.0  # throughput at the minimum
    assert percentile([3.0], 90) == 3.0


@pytest.mark.parametrize(("tail", "noisy"), [(1.21, True), (1.19, False)])
def test_a_row_is_noisy_when_p90_over_median_exceeds_1_2(tail, noisy) -> None:
    t = Timing("m", "g", "s", 1, [1.0] * 8 + [tail] * 2)  # median 1.0, p90 = tail
    assert t.spread == pytest.approx(tail) and t.noisy is noisy


def test_time_systems_rows_follow_the_systems_order() -> None:
    clock = FakeClock({"B": [1, 2, 3, 4], "A": [4, 3, 2, 1]})
    rows = time_systems("toy", "g", 4, [clock.system("B"), clock.system("A")], RoundRobin(1, 3, 3, 0), clock)
    assert [(r.system, r.batch, r.model, r.min_ms) for r in rows] == [("B", 4, "toy", pytest.approx(2)),
                                                                      ("A", 4, "toy", pytest.approx(1))]


def test_goals_are_judged_on_the_minimum_and_name_noisy_rows() -> None:
    result = BenchResult(machine={}, models=["m"])
    # medians say 100 / 50 = 2x (a miss); the least disturbed runs say 100 / 20 = 5x (met)
    result.timings += [Timing("m", "g", "torch eager fp32", 1, [100.0, 100.0, 100.0]),
                       Timing("m", "g", "onnxruntime fp32", 1, [20.0] + [50.0] * 7 + [90.0] * 2)]
    evaluate_goals(result, "m", 1)
    first = result.goals[0]
    assert first["value"] == 5.0 and first["met"] is True and first["target"] == 4.0
    assert first["noisy"] and "noisy rows (p90/median > 1.2): onnxruntime fp32 b1" in first["why"]
    quiet = BenchResult(machine={}, models=["m"])
    quiet.timings += [Timing("m", "g", "torch eager fp32", 1, [100.0] * 3),
                      Timing("m", "g", "onnxruntime fp32", 1, [50.0] * 3)]
    quiet.floors["m"] = {"floor_batch1_ms": 20.0, "floor_batch1_ms_weights": 20.0, "flops_per_item": 1e9,
                         "measured_sgemm_gflops": 100.0, "recurrent_flop_share": 0.8}
    evaluate_goals(quiet, "m", 1)
    assert quiet.goals[0]["met"] is False and quiet.goals[0]["why"].startswith("missed by 2.00x")
    assert "25.0 ms = 1.25x the floor" in quiet.goals[0]["why"] and not quiet.goals[0]["noisy"]
    assert quiet.goals[1]["value"] == 0.4 and quiet.goals[1]["met"] is False  # weight floor 20 / 50


def test_report_shows_minimum_median_and_the_noisy_mark(tmp_path) -> None:
    result = BenchResult(machine={"cpu": "x"}, models=["m"])
    result.timings += [Timing("m", "g", "torch eager fp32", 1, [10.0, 30.0, 30.0]),
                       Timing("m", "g", "onnxruntime fp32", 1, [5.0, 5.0, 5.0])]
    write_report(result, tmp_path, plots=False)
    rows = {line.split(" | ")[2]: line for line in (tmp_path / "report.md").read_text().splitlines()
            if line.startswith("| m | g |")}
    assert "| 10.00 | 30.00 | 1.00 |" in rows["torch eager fp32"]
    assert "| 5.00 | 5.00 | 1.00 |  |" in rows["onnxruntime fp32"] and "| 2.00x |" in rows["onnxruntime fp32"]
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["timings"][0]["samples_ms"] == [10.0, 30.0, 30.0] and data["timings"][0]["noisy"] is False


# ---------------------------------------------------------------------------------------------
# a whole (tiny) run on a toy model


class Toy(torch.nn.Module):
    """features (B, 4, 8) -> y (B, 4, 3) through a GRU (the recurrent share is measured)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(8, 16)
        self.gru = torch.nn.GRU(16, 16, batch_first=True)
        self.out = torch.nn.Linear(16, 3)

    def forward(self, features: torch.Tensor) -> tuple:
        h, _ = self.gru(self.inp(features))  # (B, 4, 16)
        return (self.out(h),)


class ToyAdapter:
    contract = ModelContract("toy", "frame", "a toy", (
        GraphSpec("toy_graph", "model", (TensorSpec("features", ("batch", 4, 8)),),
                  (TensorSpec("y", ("batch", 4, 3)),)),))

    def tiny_config(self):
        return {"tiny": True}

    def default_config(self):
        return {"tiny": False}

    def contract_for(self, cfg):
        return self.contract

    def reference(self, cfg, checkpoint=None):
        torch.manual_seed(0)
        return Toy().eval()

    def exportable(self, reference, graph):
        return reference

    def example_inputs(self, cfg, graph, batch, seed=0):
        return (torch.randn(batch, 4, 8, generator=torch.Generator().manual_seed(seed)),)


@pytest.fixture
def toy_registry(monkeypatch):
    monkeypatch.setattr(registry, "MODELS", {"toy": "tests.toy", "other": "tests.other"})
    monkeypatch.setattr(registry, "adapter", lambda name: ToyAdapter())


def test_models_option(toy_registry) -> None:
    assert parse_models(None) == ["toy", "other"] and parse_models("other, toy,toy") == ["other", "toy"]
    with pytest.raises(ConfigError, match=r"--models 'toy,nope': unknown model\(s\) nope; registered: toy, other"):
        parse_models("toy,nope")


def test_tiny_bench_rows_per_registered_model(tmp_path, toy_registry) -> None:
    result = run_bench(tmp_path / "bench", ["toy"], tiny=True, plots=False)
    rows = {(t.model, t.section, t.system, t.batch): t for t in result.timings}
    assert set(rows) == {("toy", "toy_graph", s, b) for s in ("torch eager fp32", "onnxruntime fp32") for b in (1, 4)}
    assert all(t.runs >= 3 and t.min_ms > 0 for t in rows.values())
    floor = result.floors["toy"]
    assert floor["params"] == sum(p.numel() for p in Toy().parameters())
    assert floor["flops_per_item"] > 0 and 0 < floor["recurrent_flop_share"] < 1
    assert [g["goal"] for g in result.goals][:1] == ["toy CPU: ORT FP32 speed-up over torch eager, batch 1"]
    report = (tmp_path / "bench" / "report.md").read_text()
    assert "| toy | toy_graph | onnxruntime fp32 | 4 |" in report and "### toy" in report
    assert any("exported by the benchmark" in n for n in result.notes)


def test_a_shared_feature_extractor_is_timed_once(monkeypatch) -> None:
    from hmr_trt.export import bench_sections
    from hmr_trt.export.bench_sections import ModelUnderTest, bench_feature_extractor

    built = []

    def toy_extractor() -> torch.nn.Module:
        built.append(1)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())

    monkeypatch.setitem(bench_sections.FEATURE_EXTRACTORS, "toy_fx", toy_extractor)
    graphs = ToyAdapter.contract.graphs + (GraphSpec("backbone", "feature_extractor",
                                                     (TensorSpec("images", ("images", 3, 8, 8)),),
                                                     (TensorSpec("features", ("images", 144)),)),)
    contract = ModelContract("toy", "frame", "a toy", graphs, feature_extractor="toy_fx")
    mut = ModelUnderTest("toy", ToyAdapter(), {}, contract, Toy())
    result = BenchResult(machine={}, models=["toy"])
    for _ in range(2):  # a second model with the same extractor adds no rows
        bench_feature_extractor(result, mut, None, [1, 2], RoundRobin(0, 2, 2, 0))
    assert [(t.model, t.section, t.system, t.batch) for t in result.timings] == [
        ("toy_fx", "backbone", "torch eager fp32", 1), ("toy_fx", "backbone", "torch eager fp32", 2)]
    assert len(built) == 1 and "no ONNX Runtime row" in result.notes[0]


WINDOW_MODELS = [m for m in registry.names() if registry.contract(m).family == "window"]


# ~9 s each: the causal one (the step section) in the quick suite, the others with -m slow
@pytest.mark.parametrize("model", [m if registry.contract(m).causal else pytest.param(m, marks=pytest.mark.slow)
                                   for m in WINDOW_MODELS])
def test_tiny_bench_rows_for_each_registered_window_model(tmp_path, model) -> None:
    """Each window model runs through the sections (its tiny config): torch eager and ONNX Runtime rows at
    each batch, its floor; a causal model with a recurrent step graph also the per-frame window vs step rows."""
    from hmr_trt.export.bench_sections import STEP_SECTION

    result = run_bench(tmp_path / "bench", [model], tiny=True, plots=False)
    systems = {(t.system, t.batch) for t in result.timings if t.model == model and t.section != STEP_SECTION}
    assert systems == {(s, b) for s in ("torch eager fp32", "onnxruntime fp32") for b in (1, 4)}
    assert result.floors[model]["params"] > 0 and result.floors[model]["flops_per_item"] > 0
    step_rows = {t.system for t in result.timings if t.section == STEP_SECTION}
    causal_step = registry.contract(model).causal and registry.contract(model).graph_for("step") is not None
    assert step_rows == ({"torch eager fp32", "torch eager fp32 step", "onnxruntime fp32 window",
                          "onnxruntime fp32 step"} if causal_step else set())
