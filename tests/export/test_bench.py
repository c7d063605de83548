"""The benchmark: round-robin timing with a recording fake clock, noisy rows, goals on the minimum, and a
tiny end-to-end run on a toy model registered in place of the real ones (no model's adapter needed)."""

from __future__ import annotations

import json

import pytest
import torch

from hmr_trt import registry
from hmr_trt.contract import GraphSpec, ModelContract, TensorSpec
from hmr_trt.contract import TensorSpec as TensorSpec_  # beside the manifest's TensorSpec in _hand_export
from hmr_trt.errors import ConfigError
from hmr_trt.export.bench import parse_models, run_bench
from hmr_trt.export.bench_report import BenchResult, evaluate_goals, write_report
from hmr_trt.export.bench_sections import measure_model as MEASURE_MODEL
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
    monkeypatch.setattr(registry, "DEFAULT_MODEL", "other")
    monkeypatch.setattr(registry, "adapter", lambda name: ToyAdapter())


def test_models_option_defaults_to_the_default_model_and_all_means_every_model(toy_registry) -> None:
    assert parse_models(None) == ["other"] and parse_models("") == ["other"]  # registry.DEFAULT_MODEL alone
    assert parse_models("all") == ["toy", "other"] and parse_models("other, toy,toy") == ["other", "toy"]
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


@pytest.mark.parametrize("model", [m for m in ("wham", "vitpose") if m in registry.names()])
def test_tiny_bench_rows_for_the_track_model_and_its_keypoint_model(tmp_path, model) -> None:
    """WHAM's rows time its step graph (one new frame for a batch of live tracks) against its torch step, not its
    whole-sequence forward; ViTPose's time its crops -> heatmaps graph per batch of crops."""
    from hmr_trt.export.bench_sections import STEP_SECTION

    said = []
    result = run_bench(tmp_path / "bench", [model], tiny=True, plots=False, say=said.append)
    graph = registry.contract(model).model_graph.name
    rows = {(t.section, t.system, t.batch) for t in result.timings if t.model == model}
    assert rows == {(graph, s, b) for s in ("torch eager fp32", "onnxruntime fp32") for b in (1, 4)}
    assert not any(t.section == STEP_SECTION for t in result.timings)
    assert result.floors[model]["params"] > 0
    if registry.contract(model).family == "track":
        assert graph == "step" and any("batch = tracks" in n for n in result.notes)
        assert result.floors[model]["recurrent_param_share"] > 0.3  # the LSTMs, counted in the step module


# ---------------------------------------------------------------------------------------------
# `make bench` / `make bench-zoo`: the default target, progress lines, resumable runs, export reuse


def test_make_bench_measures_the_default_model_and_bench_zoo_every_model() -> None:
    """The Makefile's recipes as make expands them (-n: nothing runs; -o: the venv and video count as made)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def recipe(target: str) -> str:
        import os

        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}  # under make test
        done = subprocess.run(["make", "--no-print-directory", "-n", "-o", ".venv/.installed", "-o", "data/vtest.avi",
                               target], cwd=root, capture_output=True, text=True, timeout=60, check=True, env=env)
        return done.stdout.strip().splitlines()[-1]

    bench, zoo = recipe("bench"), recipe("bench-zoo")
    assert "trt-bench --out out/bench" in bench and "--models" not in bench  # parse_models(None): the default model
    assert "--force" in bench  # make bench always measures afresh
    assert "trt-bench --models all --plan full --out out/bench --readme README.md" in zoo and "--force" not in zoo


class Terminalless:
    """A stream like a pipe or a CI log: not a terminal; records what was written and where flushes came."""

    def __init__(self) -> None:
        self.text = ""
        self.flushed_at: list = []

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        self.flushed_at.append(len(self.text))


def test_progress_is_one_flushed_line_per_measurement_when_stdout_is_not_a_terminal(tmp_path, toy_registry) -> None:
    from hmr_trt.export.bench import Progress

    stream = Terminalless()
    result = run_bench(tmp_path / "bench", ["toy"], tiny=True, plots=False, say=Progress(stream))
    lines = stream.text.splitlines()
    assert stream.text.endswith("\n") and len(stream.flushed_at) == len(lines)
    assert stream.flushed_at == [len("".join(f"{x}\n" for x in lines[:i + 1])) for i in range(len(lines))]
    assert all(line.startswith("[trt-bench ") for line in lines)
    measured = [line for line in lines if "toy toy_graph batch" in line]  # one line per round robin (batch)
    assert len(measured) == len({t.batch for t in result.timings}) == 2
    for line, batch in zip(measured, (1, 4)):
        assert f"batch {batch}: torch eager fp32 " in line and "onnxruntime fp32 " in line and " rounds]" in line
    assert any("toy: floor" in line for line in lines) and any("saved" in line for line in lines)
    assert "toy: a frame model: no per-frame step rows" in stream.text and "wrote " in lines[-1]


def test_plain_trt_bench_writes_progress_to_a_pipe(tmp_path) -> None:
    """The console script through a pipe (not a terminal): progress lines reach it before the command ends."""
    import subprocess
    import sys

    code = "import time; from hmr_trt.export.bench import Progress; Progress()('one'); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # a line left in the pipe's buffer would come only at exit (30 s)
        assert first.startswith("[trt-bench 0:00] one")
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _counting_measure(monkeypatch, interrupt_on: str = ""):
    """bench_sections.measure_model, counted; Ctrl-C (KeyboardInterrupt) as it ends on ``interrupt_on`` (its rows
    are in the run's result, its record not yet saved)."""
    from hmr_trt.export import bench_sections

    calls: list = []
    real = MEASURE_MODEL  # the module's own, not an earlier test's wrapper

    def measure(result, name, *args, **kwargs):
        calls.append(name)
        done = real(result, name, *args, **kwargs)
        if name == interrupt_on:
            assert any(t.model == name for t in result.timings)
            raise KeyboardInterrupt
        return done

    monkeypatch.setattr(bench_sections, "measure_model", measure)
    return calls


def test_a_measured_model_is_kept_and_force_measures_it_again(tmp_path, toy_registry, monkeypatch) -> None:
    out = tmp_path / "bench"
    first = run_bench(out, ["toy"], tiny=True, plots=False, say=lambda _m: None)
    record = out / "models" / "tiny" / "toy.json"
    stored = json.loads(record.read_text())
    assert stored["model"] == "toy" and stored["plan"]["name"] == "tiny" and stored["load_before"] is not None
    calls = _counting_measure(monkeypatch)
    said: list = []
    again = run_bench(out, ["toy"], tiny=True, plots=False, say=said.append)
    assert calls == []  # nothing measured: the record is the result
    assert [t.samples_ms for t in again.timings] == [t.samples_ms for t in first.timings]
    assert any("kept the measurement" in m and "--force" in m for m in said)
    assert again.provenance[0]["kept"] is True and "kept from" in (out / "report.md").read_text()
    forced = run_bench(out, ["toy"], tiny=True, plots=False, force=True, say=lambda _m: None)
    assert calls == ["toy"] and forced.provenance[0]["kept"] is False
    assert json.loads(record.read_text())["measured_at"] >= stored["measured_at"]


def test_records_are_per_plan_and_an_unreadable_record_is_measured_again(tmp_path, toy_registry, monkeypatch) -> None:
    from hmr_trt.export.bench_store import RecordStore

    out = tmp_path / "bench"
    run_bench(out, ["toy"], tiny=True, plots=False, say=lambda _m: None)
    assert RecordStore(out, "tiny").path("toy").is_file() and not RecordStore(out, "quick").path("toy").exists()
    RecordStore(out, "tiny").path("toy").write_text('{"version": 1, "model": "toy", "timi')  # cut short
    calls = _counting_measure(monkeypatch)
    said: list = []
    run_bench(out, ["toy"], tiny=True, plots=False, say=said.append)
    assert calls == ["toy"] and any("measuring again" in m and "unreadable" in m for m in said)


def test_an_interrupted_run_keeps_the_finished_models_and_the_next_run_resumes(tmp_path, toy_registry,
                                                                               monkeypatch) -> None:
    out = tmp_path / "bench"
    calls = _counting_measure(monkeypatch, interrupt_on="other")
    said: list = []
    with pytest.raises(KeyboardInterrupt):
        run_bench(out, ["toy", "other"], tiny=True, plots=False, say=said.append)
    assert calls == ["toy", "other"]
    assert "interrupted: 1 of 2 model(s) are saved" in said[-1]
    kept = json.loads((out / "models" / "tiny" / "toy.json").read_text())
    assert {t["batch"] for t in kept["timings"]} == {1, 4} and not (out / "models" / "tiny" / "other.json").exists()
    report = (out / "report.md").read_text()
    assert "| toy | toy_graph | onnxruntime fp32 | 4 |" in report and "| other |" not in report  # usable now
    assert not list((out / "models" / "tiny").glob(".*.tmp"))  # no half-written record
    calls = _counting_measure(monkeypatch)
    resumed = run_bench(out, ["toy", "other"], tiny=True, plots=False, say=lambda _m: None)
    assert calls == ["other"] and resumed.models == ["toy", "other"]
    assert {t.model for t in resumed.timings} == {"toy", "other"}
    assert [p["kept"] for p in resumed.provenance] == [True, False]
    assert {g["goal"].split()[0] for g in resumed.goals} == {"toy", "other"}  # goals for kept models too


def test_readme_zoo_table_is_rewritten_between_its_markers_only(tmp_path, toy_registry) -> None:
    from hmr_trt.export.bench_store import (
        README_BEGIN,
        README_END,
        RecordStore,
        rewrite_between_markers,
        update_readme,
    )

    out = tmp_path / "bench"
    run_bench(out, ["toy", "other"], tiny=True, plots=False, say=lambda _m: None)
    records = [RecordStore(out, "tiny").load(m) for m in ("toy", "other")]
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{README_BEGIN}\n| old | table |\n{README_END}\nafter\n")
    update_readme(readme, records)
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n" + README_BEGIN + "\n") and text.endswith(README_END + "\nafter\n")
    assert "| old | table |" not in text
    rows = [line for line in text.splitlines() if line.startswith("| toy |") or line.startswith("| other |")]
    assert len(rows) == 2 and all(line.count(" | ") == 10 and line.endswith("| none |") for line in rows)
    toy = records[0]
    b1 = next(t for t in toy.timings if (t.system, t.batch) == ("onnxruntime fp32", 1))
    assert f"{b1.min_ms:.1f} ms" in rows[0] and "(4)" in rows[0]  # ORT per item at the largest batch
    with pytest.raises(ConfigError, match="expected one zoo table between the markers"):
        rewrite_between_markers("no markers here\n", ["x"])


# export reuse: a manifest written by hand (the checks read the manifest and the files, not the ONNX inside)


def _hand_export(folder, data: bytes = b"onnx bytes", window: int = 4):
    from hmr_trt.manifest import Artifact, Manifest, TensorSpec, sha256_of

    folder.mkdir(parents=True)
    (folder / "toy_graph_fp32.onnx").write_bytes(data)
    specs = [TensorSpec("features", ["batch", window, 8])], [TensorSpec("y", ["batch", window, 3])]
    contract = ModelContract("toy", "frame", "a toy", (
        GraphSpec("toy_graph", "model", (TensorSpec_("features", ("batch", window, 8)),),
                  (TensorSpec_("y", ("batch", window, 3)),)),))
    manifest = Manifest(model="toy", config={}, profile={}, contract=contract.to_dict(),
                        verdict={"fp32": {"verdict": "PASS"}})
    manifest.add(Artifact("toy_graph", "toy_graph_fp32.onnx", "onnx", "fp32", sha256_of(folder / "toy_graph_fp32.onnx"),
                          *specs))
    manifest.write(folder)
    return folder


def test_a_valid_export_is_reused_and_a_broken_one_is_made_again(tmp_path, toy_registry) -> None:
    from hmr_trt.export.bench import check_export, resolve_export

    made: list = []

    def exporter(model, out, video, say) -> None:
        made.append((model, out))
        _hand_export(out)

    demo = _hand_export(tmp_path / "demo")
    said: list = []
    assert check_export(demo, "toy") is None
    assert resolve_export("toy", None, tmp_path / "bench", True, None, said.append, (demo,), exporter) == demo
    assert made == [] and "reusing the export in" in said[-1]
    (demo / "toy_graph_fp32.onnx").write_bytes(b"onnx bytez")  # same size, other bytes
    assert "does not match the sha256" in check_export(demo, "toy")
    got = resolve_export("toy", None, tmp_path / "bench", True, None, said.append, (demo,), exporter)
    assert got == tmp_path / "bench" / "export" / "toy" and made == [("toy", got)]
    assert any("not reusing" in m and "sha256" in m for m in said)
    assert resolve_export("toy", None, tmp_path / "bench", True, None, said.append, (demo,), exporter) == got
    assert len(made) == 1  # the export made then is reused
    assert resolve_export("toy", None, tmp_path / "none", False, None, said.append, (demo,), exporter) is None
    with pytest.raises(ConfigError, match=r"--export .*demo: not a usable export of toy: .*sha256"):
        resolve_export("toy", demo, tmp_path / "bench", True, None, said.append, (), exporter)
    (demo / "toy_graph_fp32.onnx").unlink()
    assert "is missing" in check_export(demo, "toy")
    assert check_export(tmp_path / "nowhere", "toy") == "no manifest.json"
    assert check_export(got, "other").startswith("an export of toy")
    wider = _hand_export(tmp_path / "window6", window=6)  # another --window: not the benchmarked inputs
    assert "other model-graph inputs" in check_export(wider, "toy")
    assert resolve_export("toy", wider, tmp_path / "fresh", False, None, said.append, (), exporter) == wider
    assert resolve_export("toy", None, tmp_path / "fresh", False, None, said.append, (wider,), exporter) is None


def test_end_to_end_progress_and_the_stage_plot(tmp_path) -> None:
    from hmr_trt.export.bench_sections import _frame_ticks

    said: list = []
    tick = _frame_ticks(said.append, "toy", 100)
    for _ in range(100):
        tick(1)
    assert [m.split(" frames read")[0] for m in said] == [f"toy end to end: {n}/100" for n in (25, 50, 75)]
    result = BenchResult(machine={}, models=[])
    result.e2e.append({"model": "toy", "frames": 10, "tracks": 2, "fps": 5.0, "total_s": 2.0, "backend": "ort",
                       "timings_s": {"decode": 0.5, "detect": 1.0, "track": 0.0, "backbone": 0.5}})
    write_report(result, tmp_path, plots=True)
    assert result.plots == ["e2e_stages.png"] and (tmp_path / "e2e_stages.png").stat().st_size > 0
    report = (tmp_path / "report.md").read_text()
    assert "| toy | 10 | 2 | 5.0 | 0.50 | 1.00 | 0.00 | 0.50 |" in report and "![e2e_stages.png]" in report


def test_trt_bench_without_models_measures_the_default_model_only(tmp_path, toy_registry, monkeypatch,
                                                                    capsys) -> None:
    import sys

    from hmr_trt.export import bench

    out = tmp_path / "bench"
    monkeypatch.setattr(sys, "argv", ["trt-bench", "--tiny", "--out", str(out), "--video", str(tmp_path / "none")])
    with pytest.raises(SystemExit) as exit_info:
        bench.main()
    assert exit_info.value.code in (0, None)
    assert sorted(p.name for p in (out / "models" / "tiny").iterdir()) == ["other.json"]  # registry.DEFAULT_MODEL
    printed = capsys.readouterr().out
    assert "1 model(s) (other)" in printed and "[1/1] other: measuring" in printed
    assert "end-to-end section is skipped" in printed and "finished in" in printed


# ---------------------------------------------------------------------------------------------
# the cap per call: a batch size estimated too slow is skipped, and said to be


def test_a_batch_size_is_skipped_when_its_estimated_call_exceeds_the_cap() -> None:
    from hmr_trt.export.bench_sections import over_cap

    result = BenchResult(machine={}, models=["m"])
    result.timings += [Timing("m", "g", "torch eager fp32", 1, [10_000.0, 12_000.0]),
                       Timing("m", "g", "onnxruntime fp32", 1, [4_000.0]),
                       Timing("other", "g", "torch eager fp32", 4, [90_000.0])]  # another model: not read
    said: list = []
    assert over_cap(result, said.append, "m", "g", 1, 30.0) is False  # nothing smaller measured: measured
    assert over_cap(result, said.append, "m", "g", 4, 0.0) is False  # 0: no cap
    assert over_cap(result, said.append, "m", "g", 2, 30.0) is False and said == []  # est. 20 s
    assert over_cap(result, said.append, "m", "g", 4, 30.0) is True  # slowest minimum 10 s x 4 = 40 s
    assert result.skipped == [{"model": "m", "section": "g", "batch": 4, "est_call_s": 40.0, "from_batch": 1,
                               "max_call_s": 30.0}]
    assert said == ["m g batch 4: skipped: est. 40 s per call (batch 1's slowest call x 4; over the 30 s cap per "
                    "call)"]
    result.timings.append(Timing("m", "g", "torch eager fp32", 2, [14_000.0]))  # estimates from the largest below
    assert over_cap(result, said.append, "m", "g", 4, 30.0) is False  # 14 s x 2 = 28 s


def test_skipped_batches_are_in_the_record_the_report_and_the_readme(tmp_path, toy_registry) -> None:
    from hmr_trt.export.bench_store import README_BEGIN, README_END, RecordStore, update_readme

    out = tmp_path / "bench"
    said: list = []
    result = run_bench(out, ["toy"], tiny=True, plots=False, say=said.append, max_call_s=1e-9)
    assert {t.batch for t in result.timings} == {1}  # batch 4 estimated over the (tiny) cap
    assert [(k["model"], k["section"], k["batch"], k["from_batch"]) for k in result.skipped] == [("toy", "toy_graph",
                                                                                                  4, 1)]
    slowest_b1 = max(t.min_ms for t in result.timings)
    assert result.skipped[0]["est_call_s"] == round(slowest_b1 / 1000 * 4, 1)
    assert any("toy toy_graph batch 4: skipped: est." in m for m in said)
    record = RecordStore(out, "tiny").load("toy")
    assert record.skipped == result.skipped and record.plan["max_call_s"] == 1e-9
    report = (out / "report.md").read_text()
    assert "| toy | toy_graph | 4 | skipped: est. 0 s per call (from batch 1) | 1e-09 s |" in report
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_BEGIN}\n{README_END}\n")
    update_readme(readme, [record])
    row = next(line for line in readme.read_text().splitlines() if line.startswith("| toy |"))
    assert row.endswith("| b4 skipped: est. 0 s per call |") and "(1)" in row  # per item at the largest measured
    assert "a batch size whose call is estimated over 1e-09 s skipped" in " ".join(readme.read_text().split())
    kept = run_bench(out, ["toy"], tiny=True, plots=False, say=lambda _m: None)  # a resumed run keeps the skip
    assert kept.skipped == result.skipped


# ---------------------------------------------------------------------------------------------
# Ctrl-C in the middle of a model, in a real trt-bench process, then the same command again

RESUME_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
import torch
import test_bench as tb
from hmr_trt import registry

class Slow(tb.Toy):
    def forward(self, features):
        time.sleep(0.3)  # long enough to be interrupted between its round robins
        return super().forward(features)

class SlowAdapter(tb.ToyAdapter):
    def reference(self, cfg, checkpoint=None):
        torch.manual_seed(0)
        return Slow().eval()

registry.MODELS = {{"toy": "tests.toy", "slow": "tests.slow"}}
registry.adapter = lambda name: SlowAdapter() if name == "slow" else tb.ToyAdapter()
from hmr_trt.export import bench
bench.main()
"""


def _trt_bench(script, out, interrupt_after: str = "", signum=None):
    """The script as a process (stdout a pipe); ``signum`` (default SIGINT, as Ctrl-C) once a line containing
    ``interrupt_after`` is printed. Returns (exit code, lines). Bounded: killed after 180 s."""
    import signal
    import subprocess
    import sys
    import threading

    args = [sys.executable, str(script), "--models", "all", "--tiny", "--out", str(out), "--video", str(out / "none")]
    # SIGINT back to its default in the child: a job started in the background by a non-interactive shell (a CI
    # runner's, nohup) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    timer = threading.Timer(180, proc.kill)
    timer.start()
    lines: list = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if interrupt_after and interrupt_after in line:
                proc.send_signal(signal.SIGINT if signum is None else signum)
                interrupt_after = ""
        return proc.wait(timeout=60), lines
    finally:
        timer.cancel()
        proc.kill()
        proc.wait()


def test_ctrl_c_in_the_middle_of_a_model_then_the_same_command_resumes(tmp_path) -> None:
    """A real SIGINT while the second model is between round robins: exit 130, the first model's record kept and
    not measured again by the next run, the interrupted model measured from the start."""
    from pathlib import Path

    script = tmp_path / "trt_bench_toys.py"
    script.write_text(RESUME_SCRIPT.format(tests=str(Path(__file__).resolve().parent)))
    out = tmp_path / "bench"
    records = out / "models" / "tiny"
    code, first = _trt_bench(script, out, interrupt_after="slow toy_graph batch 1:")
    assert code == 130, "\n".join(first)
    assert any("[1/2] toy: done in" in line for line in first) and any("[2/2] slow: measuring" in line for line in first)
    assert not any("slow toy_graph batch 4:" in line for line in first)  # cut short after its batch-1 rows
    assert "interrupted: 1 of 2 model(s) are saved" in first[-1]
    assert sorted(p.name for p in records.iterdir()) == ["toy.json"]  # nothing of the interrupted model
    toy_record = (records / "toy.json").read_bytes()

    code, second = _trt_bench(script, out)
    assert code == 0, "\n".join(second)
    assert any("[1/2] toy: kept the measurement" in line for line in second)
    assert not any(line.split("] ", 1)[-1].startswith("toy toy_graph batch") for line in second)  # not remeasured
    assert [line.split("] ", 1)[-1].split(":")[0] for line in second if "toy_graph batch" in line] == \
        ["slow toy_graph batch 1", "slow toy_graph batch 4"]  # the interrupted one, from its first batch
    assert (records / "toy.json").read_bytes() == toy_record and (records / "slow.json").is_file()
    report = (out / "report.md").read_text()
    assert "| toy | toy_graph | onnxruntime fp32 | 4 |" in report and "| slow | toy_graph | onnxruntime fp32 | 4 |" in report


@pytest.mark.slow  # a second process pair like the Ctrl-C test's (~25 s under load)
def test_sigterm_stops_trt_bench_as_ctrl_c_does(tmp_path) -> None:
    """`kill` (a CI job cancelled) in the middle of a model: exit 130, the finished model saved and reported."""
    import signal
    from pathlib import Path

    script = tmp_path / "trt_bench_toys.py"
    script.write_text(RESUME_SCRIPT.format(tests=str(Path(__file__).resolve().parent)))
    out = tmp_path / "bench"
    code, lines = _trt_bench(script, out, interrupt_after="slow toy_graph batch 1:", signum=signal.SIGTERM)
    assert code == 130, "\n".join(lines)
    assert "interrupted: 1 of 2 model(s) are saved" in lines[-1]
    assert sorted(p.name for p in (out / "models" / "tiny").iterdir()) == ["toy.json"]
    assert "| toy | toy_graph | onnxruntime fp32 | 4 |" in (out / "report.md").read_text()
