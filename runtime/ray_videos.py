"""Many videos across a Ray cluster (``trt-run --videos DIR --ray [ADDRESS]``).

A pool of Ray Core actors, each opening the export's backends once (engines built or loaded once per
actor, one GPU per actor where the cluster has GPUs) and running whole videos through the same
pipeline as ``trt-run --video``. Per-video outputs go to ``OUT/<video stem>/`` exactly as for one
video; ``OUT/summary.json`` lists every video with its status, and a video that fails is reported
there (its error in one line) without stopping the others. Everything is written into a staging
directory that replaces ``OUT`` at the end (its entries, where ``OUT`` is a mount point), so an interrupted
run leaves nothing half-written; ``OUT`` must be new, empty or an earlier ``--videos`` run (its run file).

``ray`` is an optional dependency (the ``ray`` extra: Ray Core only, no pyarrow/pandas), imported lazily.
Without ADDRESS a local Ray instance is started with one CPU per actor (``--actors``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from hmr_trt.errors import ConfigError, HmrTrtError
from hmr_trt.manifest import RUN_FILE, staged_output

from .outputs import write_summary_json
from .pipeline import RunOptions

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
SUMMARY_NAME = "summary.json"
Progress = Callable[[str, Dict[str, Any]], None]  # (video name, its summary row) as each video ends


def videos_in(folder: Path) -> List[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--videos {folder}: not a directory")
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise ConfigError(f"--videos {folder}: no videos in it (looked for {', '.join(VIDEO_SUFFIXES)})")
    return videos


class VideoWorker:
    """One actor: the backends opened once, then one video after another."""

    def __init__(self, opts: RunOptions) -> None:
        import contextlib

        from .backends_select import open_backends

        self.opts = opts
        self._stack = contextlib.ExitStack()
        self.backends = self._stack.enter_context(open_backends(
            opts.export_dir, opts.backend, opts.precision, opts.threads, device=opts.device,
            ort_providers=opts.ort_providers, triton_url=opts.triton_url))

    def run(self, video: str, out: str) -> Dict[str, Any]:
        from .pipeline import run_video

        opts = dataclasses.replace(self.opts, video=Path(video), out=Path(out))
        start = time.perf_counter()
        try:
            summary = run_video(opts, opened=self.backends)
        except Exception as exc:  # a broken video is reported, the pool goes on
            return {"video": video, "status": "failed", "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
                    "seconds": round(time.perf_counter() - start, 3)}
        return {"video": video, "status": "ok", "out": Path(out).name, "frames": summary.get("frames_decoded"),
                "frames_lost": summary.get("frames_lost"), "tracks": summary.get("tracks"),
                "seconds": round(time.perf_counter() - start, 3)}


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a Ray address that does not answer (ray.init itself retries for minutes)."""
    import socket

    if address == "auto":
        return
    host_port = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = host_port.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r}: expected HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise HmrTrtError(f"no Ray cluster answers at {address} ({exc.strerror or type(exc).__name__}): start one "
                          "(ray start --head) or fix --ray-address") from exc


def _init_ray(address: Optional[str], actors: int) -> Any:
    try:
        import ray
    except ImportError as exc:
        raise HmrTrtError("--ray needs Ray: pip install 'hmr-trt[ray]'") from exc
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(num_cpus=actors, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                     _node_ip_address="127.0.0.1")
    except Exception as exc:  # ConnectionError, timeouts, bad address syntax
        raise HmrTrtError(f"cannot reach a Ray cluster at {address or 'a new local instance'}: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return ray


def run_videos(folder: Path, opts: RunOptions, address: Optional[str] = None, actors: int = 2,
               progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Every video of ``folder`` through ``actors`` Ray actors; returns (and writes) the summary of all."""
    if actors < 1:
        raise ConfigError(f"--actors must be >= 1, got {actors}")
    videos = videos_in(folder)
    names = [v.stem for v in videos]
    if len(set(names)) != len(names):
        raise ConfigError(f"--videos {folder}: two videos share a name stem; their outputs would collide")
    ray = _init_ray(address, actors)
    start = time.perf_counter()
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0))
        worker = ray.remote(num_cpus=1, num_gpus=1 if gpus >= 1 else 0)(VideoWorker)
        # an earlier --videos run is recognised by its run file, never by a summary.json a user may have
        with staged_output(opts.out, replace_marker=RUN_FILE) as stage:
            pool = [worker.remote(opts) for _ in range(min(actors, len(videos)))]
            pending = {}
            queue = list(videos)
            rows: Dict[str, Dict[str, Any]] = {}

            def submit(actor: Any) -> None:
                video = queue.pop(0)
                pending[actor.run.remote(str(video), str(stage / video.stem))] = (actor, video)

            for actor in pool:
                if queue:
                    submit(actor)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                actor, video = pending.pop(done[0])
                try:
                    row = ray.get(done[0])
                except Exception as exc:  # the actor itself died (e.g. it could not open the export)
                    raise HmrTrtError(f"a Ray actor failed on {video.name}: {str(exc).splitlines()[-1]}") from exc
                rows[video.name] = row
                if progress:
                    progress(video.name, row)
                if queue:
                    submit(actor)
            total = time.perf_counter() - start
            ordered = [rows[v.name] for v in videos]
            frames = sum(r.get("frames") or 0 for r in ordered)
            summary = {"videos": ordered, "ok": sum(r["status"] == "ok" for r in ordered),
                       "failed": sum(r["status"] != "ok" for r in ordered), "actors": len(pool),
                       "ray_address": address or "local", "gpus_per_actor": 1 if gpus >= 1 else 0,
                       "backend": opts.backend, "precision": opts.precision, "export_dir": str(opts.export_dir),
                       "frames": frames, "total_s": round(total, 3),
                       "frames_per_second": round(frames / total, 2) if total > 0 else None}
            write_summary_json(stage / SUMMARY_NAME, summary)
            (stage / RUN_FILE).write_text(json.dumps({"files": sorted(p.name for p in stage.iterdir())}, indent=1))
    finally:
        ray.shutdown()
    return summary
