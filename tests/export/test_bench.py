"""The benchmark code runs end to end on a tiny configuration and writes a readable report."""

from __future__ import annotations

import json

from hmr_trt.export.bench import BenchResult, Timing, evaluate_goals, run_bench, time_call


def test_tiny_bench_writes_report_plots_and_goals(tmp_path) -> None:
    result = run_bench(tmp_path / "bench", None, None, tiny=True)
    report = (tmp_path / "bench" / "report.md").read_text()
    for heading in ("## Temporal model and backbone", "## The floor", "## Cost vs number of tracks", "## Goals"):
        assert heading in report
    systems = {t.system for t in result.timings}
    assert {"torch eager fp32", "onnxruntime fp32"} <= systems
    assert all(t.median_ms > 0 and t.p90_ms >= t.median_ms for t in result.timings)
    assert result.floor["flops_per_window"] > 0 and result.floor["measured_bandwidth_gbs"] > 0
    assert (tmp_path / "bench" / "temporal_vs_batch.png").stat().st_size > 1000
    data = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert data["tracks_scaling"] and data["goals"]


def test_time_call_counts_runs_and_orders_percentiles() -> None:
    calls = []
    med, p90, n = time_call(lambda: calls.append(1), warmup=2, min_runs=5, budget_s=0.0)
    assert n == 5 and len(calls) == 7 and p90 >= med >= 0


def test_goals_report_misses_and_hits() -> None:
    result = BenchResult(machine={})
    result.timings += [Timing("temporal", "torch eager fp32", 1, 100.0, 110.0, 5),
                       Timing("temporal", "onnxruntime fp32", 1, 50.0, 55.0, 5)]
    result.floor = {"floor_batch1_ms": 20.0, "floor_batch1_ms_weights": 20.0, "flops_per_window": 1e9,
                    "measured_sgemm_gflops": 100.0, "gru_flop_share": 0.8, "gru_param_share": 0.85}
    evaluate_goals(result, 1)
    first = result.goals[0]
    assert first["value"] == 2.0 and first["target"] == 4.0 and first["met"] is False
    assert first["why"].startswith("missed by 2.00x") and "25.0 ms = 1.25x the floor" in first["why"]
    assert result.goals[1]["met"] is False and "weight" not in result.goals[1]["why"]  # 20/50 = 0.4 < 0.5
