"""``trt-run``: a video (or precomputed features) through the exported model, to meshes on disk."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from hmr_trt.cli_common import Precision, run_cli
from hmr_trt.errors import ConfigError

from .sinks import FORMATS
from .sources import DEFAULT_STALL_S
from .track import MIN_TRACK_LENGTH

PROGRESS_EVERY_S = 5.0  # a progress line this often when stderr is not a terminal


class BackendChoice(str, Enum):
    auto = "auto"
    tensorrt = "tensorrt"
    onnxruntime = "onnxruntime"
    triton = "triton"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Emit(str, Enum):
    center = "center"
    last = "last"
    all = "all"


OutputFormat = Enum("OutputFormat", {name: name for name in FORMATS}, type=str)  # runtime/sinks.FORMATS


class LiveDrop(str, Enum):
    oldest = "oldest"
    none = "none"


class Border(str, Enum):
    nearest = "nearest"
    repeat = "repeat"


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def run(
    out: Annotated[Path, typer.Option("--out", help="Output directory: track_<id>.npz files and summary.json.")],
    video: Annotated[Optional[str], typer.Option(help="Input: a video file, a camera index (0) or a stream URL "
                                                 "(rtsp://, http(s):// MJPEG or HLS, udp://).")] = None,
    image: Annotated[Optional[List[Path]], typer.Option("--image", dir_okay=False, help="Still image(s) for frame "
                                                        "and scene models (repeat --image): one result file "
                                                        "each.")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Scene models: center-map score threshold in "
                                                       "(0, 1) (default 0.2, the released value).")] = None,
    features: Annotated[Optional[Path], typer.Option(dir_okay=False, help="Precomputed per-frame features (.npz) "
                                                     "instead of a video.")] = None,
    export_dir: Annotated[Path, typer.Option("--export", help="Directory written by trt-export / trt-build.")]
    = Path("out/demo/export"),
    backend: Annotated[BackendChoice, typer.Option(help="auto: the TensorRT API when a matching engine "
                                                   "exists, else ONNX Runtime (its GPU providers when usable, "
                                                   "else the CPU).")] = BackendChoice.auto,
    precision: Annotated[Precision, typer.Option(help="Which exported precision to run.")] = Precision.fp32,
    emit: Annotated[Emit, typer.Option(help="center (16-frame window centred on each frame), last (causal), "
                                       "all (non-overlapping windows, fastest).")] = Emit.center,
    detector: Annotated[str, typer.Option(help="auto (SSDLite when tools/convert_ssdlite.py has converted it, "
                                          "else HOG), ssdlite, hog (OpenCV's people detector), or a YOLO-style "
                                          "detector .onnx.")] = "auto",
    output_format: Annotated[Optional[List[OutputFormat]], typer.Option(
        "--format", help="Repeatable. " + "; ".join(f"{k}: {v}" for k, v in FORMATS.items()) + " (default npz).")]
    = None,
    vibe_data: Annotated[Optional[Path], typer.Option(help="--format vibe: the folder holding the demos' "
                                                      "J_regressor_extra.npy (VIBE's data/vibe_data; TCMR, "
                                                      "MPS-Net, GLoT: data/base_data), or the file: joints3d "
                                                      "then holds the demos' 49 joints (needs an SMPL body "
                                                      "model), else the body model's 24.")] = None,
    live_drop: Annotated[LiveDrop, typer.Option(help="Live sources, when inference falls behind: drop the oldest "
                                                "queued frame (counted in the summary), or none (wait).")]
    = LiveDrop.oldest,
    stall_s: Annotated[float, typer.Option(min=0.1, help="A source that cannot be opened, or a stream that sends "
                                           "nothing, for this many seconds ends the run.")] = DEFAULT_STALL_S,
    render: Annotated[Optional[Path], typer.Option(dir_okay=False, help="Write the meshes over the video "
                                                   "to this .mp4.")] = None,
    fit_to_box: Annotated[bool, typer.Option("--fit-to-box", help="Render each mesh scaled and moved into its "
                                             "detection box instead of where the predicted camera puts it.")]
    = False,
    no_vertices: Annotated[bool, typer.Option("--no-vertices", help="Leave vertices out of the .npz files.")]
    = False,
    max_frames: Annotated[Optional[int], typer.Option(min=1, help="Stop after this many frames.")] = None,
    min_track_frames: Annotated[int, typer.Option(min=1, help="Drop tracks shorter than this (before "
                                                  "inference).")] = MIN_TRACK_LENGTH,
    border: Annotated[Border, typer.Option(help="--emit center at track ends: nearest (windows padded with the "
                                           "nearest real frames) or repeat (the official demos: the frame's "
                                           "feature repeated T times).")] = Border.nearest,
    threads: Annotated[int, typer.Option(min=0, help="ONNX Runtime threads (0: its default).")] = 0,
    device: Annotated[Device, typer.Option(help="auto: the GPU when one is usable; cpu: ONNX Runtime on the CPU "
                                           "only; cuda: ONNX Runtime's GPU providers (error without).")]
    = Device.auto,
    ort_providers: Annotated[Optional[str], typer.Option("--ort-providers", help="ONNX Runtime execution "
                                                         "providers in order, e.g. CUDAExecutionProvider,"
                                                         "CPUExecutionProvider (or tensorrt,cuda,cpu).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    triton_url: Annotated[Optional[str], typer.Option(help="--backend triton: the Triton server, HOST:PORT "
                                                      "(HTTP).")] = None,
    videos: Annotated[Optional[Path], typer.Option(file_okay=False, help="A folder of videos: each one's "
                                                   "outputs under --out/<name>/, one summary.json for all.")] = None,
    ray: Annotated[bool, typer.Option("--ray", help="--videos across a Ray cluster (a local one unless "
                                      "--ray-address).")] = False,
    ray_address: Annotated[Optional[str], typer.Option(help="An existing Ray cluster (e.g. 10.0.0.5:6379 or "
                                                       "ray://host:10001).")] = None,
    actors: Annotated[int, typer.Option(min=1, help="--videos: Ray actors, each with its own backends "
                                        "(one GPU each where the cluster has GPUs).")] = 2,
) -> None:
    """Detect, track and recover meshes for every person in a video (or for precomputed features)."""

    def job() -> None:
        from rich.console import Console

        from .pipeline import RunOptions, run_features, run_video

        if sum(x is not None for x in (video, features, videos, image)) != 1:
            raise ConfigError("give exactly one of --video, --image, --features or --videos")
        if (ray or ray_address) and videos is None:
            raise ConfigError("--ray runs a folder of videos: give --videos DIR")
        opts = RunOptions(out=out, export_dir=export_dir, video=video, features=features, backend=backend.value,
                          precision=precision.value, emit=emit.value, detector=detector, render=render,
                          format=tuple(f.value for f in output_format) if output_format else "npz",
                          live_drop=live_drop.value, stall_s=stall_s, fit_to_box=fit_to_box,
                          vertices=not no_vertices, max_frames=max_frames, min_track_frames=min_track_frames,
                          threads=threads, border=border.value, device=device.value, ort_providers=ort_providers,
                          triton_url=triton_url, images=list(image) if image is not None else None,
                          threshold=threshold, vibe_data=vibe_data)
        console = Console(stderr=True)
        if videos is not None:
            if not (ray or ray_address):
                raise ConfigError("--videos runs on Ray: add --ray (a local Ray instance) or --ray-address")
            _videos_on_ray(console, videos, opts, ray_address, actors, quiet)
            return
        if image is not None:
            from .images import run_images

            summary = run_images(opts)
            console.print(f"{summary['images']} images, people per image: "
                          f"{[r['people'] for r in summary['image_files']]}")
        elif video is not None:
            summary = _with_progress(console, opts, run_video, quiet)
        else:
            summary = run_features(opts)
        print_summary(console, summary)

    run_cli(job)


def _videos_on_ray(console, folder: Path, opts, address: Optional[str], actors: int, quiet: bool) -> None:  # noqa: ANN001
    from .ray_videos import run_videos, videos_in

    total = len(videos_in(folder))

    def show(name: str, row: dict) -> None:
        if not quiet:
            status = "[green]ok[/]" if row["status"] == "ok" else f"[red]failed[/]: {row['error']}"
            console.print(f"video {name}: {status} ({row['seconds']:.1f} s)")

    if not quiet:
        console.print(f"{total} videos, {actors} Ray actors")
    summary = run_videos(folder, opts, address, actors, progress=show)
    console.print(f"{summary['ok']} of {total} videos done, {summary['failed']} failed; "
                  f"{summary['frames_per_second']} frames/s over all; summary.json in {opts.out}")


def _with_progress(console, opts, run_video, quiet: bool):  # noqa: ANN001 - rich types imported lazily
    import sys

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .sources import open_source, source_kind

    total = None
    if source_kind(opts.video) == "file":
        with open_source(opts.video) as source:  # a bad file fails here, in one line, before anything runs
            total = min(source.info.frames_declared or 0, opts.max_frames or 1 << 30) or None
    if quiet:
        return run_video(opts)
    if not sys.stderr.isatty():  # a log file: a line every few seconds
        return run_video(opts, progress=_progress_lines(console, total))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("frames", total=total)
        opts.on_backends = lambda b: bar.update(task, description=f"frames ({_ran_on(b.providers)})")
        return run_video(opts, progress=lambda n: bar.advance(task, n))


def _progress_lines(console, total: Optional[int]):  # noqa: ANN001, ANN202
    """A progress callback printing ``frames N[/total], X frames/s, K open tracks`` every PROGRESS_EVERY_S seconds."""
    import time

    state = {"frames": 0, "start": time.perf_counter(), "last": time.perf_counter()}

    def progress(n: int, tracks: int = 0) -> None:
        state["frames"] += n
        now = time.perf_counter()
        if now - state["last"] >= PROGRESS_EVERY_S:
            state["last"] = now
            fps = state["frames"] / max(now - state["start"], 1e-9)
            of = f"/{total}" if total else ""
            console.print(f"frames {state['frames']}{of}, {fps:.1f} frames/s, {tracks} open tracks", highlight=False,
                          soft_wrap=True)

    progress.with_tracks = True  # type: ignore[attr-defined]
    return progress


def _ran_on(providers: dict) -> str:
    """``backbone: CUDA, temporal: TensorRT+CUDA, ...``: the providers each graph's session really runs on."""
    from .ort_providers import short

    return ", ".join(f"{g}: {'+'.join(short(p) for p in ps)}" for g, ps in providers.items())


def print_summary(console, summary: dict) -> None:  # noqa: ANN001
    from rich.table import Table

    console.print(f"backend: {summary['backend']}; precision {summary['precision']}; emit {summary['emit']}")
    if summary.get("weights"):
        console.print(f"note: {summary['weights']}")
    table = Table(title=f"{summary['frames_decoded']} frames, {summary['tracks']} tracks, "
                        f"{summary['frames_per_second']} frames/s")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    total = sum(summary["timings_s"].values()) or 1.0
    for stage, sec in summary["timings_s"].items():
        table.add_row(stage, f"{sec:.2f}", f"{100 * sec / total:.0f}%")
    console.print(table)
    if summary.get("frames_dropped_live"):
        console.print(f"[yellow]{summary['frames_dropped_live']} live frames dropped (inference fell behind; "
                      "--live-drop)[/]")
    if summary.get("source") not in (None, "file"):
        console.print(f"live source ended: {summary.get('ended')}")
    if summary.get("latency_ms", {}).get("frames"):
        lat = summary["latency_ms"]
        console.print(f"latency per frame (decode to final): p50 {lat['p50']} ms, p95 {lat['p95']} ms, "
                      f"max {lat['max']} ms")
    if summary.get("frames_lost"):
        console.print(f"[yellow]{summary['frames_lost']} frames could not be decoded (damaged video)[/]")
    if summary.get("vibe_joints"):
        console.print(f"note: {summary['vibe_joints']['note']}")
    if "image_files" in summary:
        console.print(f"wrote {len(summary['image_files'])} image files and summary.json")
    else:
        console.print(f"wrote {summary['tracks']} track files and summary.json")


def main() -> None:
    app()
