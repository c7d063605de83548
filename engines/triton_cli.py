"""``trt-triton``: a Triton Inference Server model repository from an hmr-trt export (see engines/triton_repo.py)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from typing_extensions import Annotated

from hmr_trt.cli_common import Precision, run_cli


class Platform(str, Enum):
    auto = "auto"
    tensorrt_plan = "tensorrt_plan"
    onnxruntime_onnx = "onnxruntime_onnx"


class Kind(str, Enum):
    auto = "auto"
    gpu = "gpu"
    cpu = "cpu"


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def triton(
    export_dir: Annotated[Path, typer.Argument(file_okay=False, help="Directory written by trt-export or trt-build.")],
    out: Annotated[Path, typer.Option("--out", help="The model repository to write.")],
    precision: Annotated[Precision, typer.Option(help="Which exported precision to serve.")] = Precision.fp32,
    platform: Annotated[Platform, typer.Option(help="auto: tensorrt_plan when the export has engines, else "
                                               "onnxruntime_onnx.")] = Platform.auto,
    instances: Annotated[int, typer.Option(min=1, help="Instances of each model.")] = 1,
    kind: Annotated[Kind, typer.Option(help="Instance kind (auto: GPU for plans, CPU for ONNX).")] = Kind.auto,
    max_queue_delay_us: Annotated[int, typer.Option(min=0, help="Dynamic batching queue delay.")] = 500,
) -> None:
    """Write a Triton model repository: one model per graph, an ensemble from crops to vertices, and the
    sequence-batched step graph when the export has one."""

    def job() -> None:
        from rich.console import Console
        from rich.table import Table

        from .triton_repo import RepoOptions, repository_from_export

        opts = RepoOptions(precision=precision.value, platform=platform.value, instances=instances, kind=kind.value,
                           max_queue_delay_us=max_queue_delay_us)
        written = repository_from_export(export_dir, out, opts)
        table = Table(title=f"Triton model repository {out}")
        table.add_column("model")
        table.add_column("platform")
        for name, plat in written.items():
            table.add_row(name, plat)
        Console(stderr=True).print(table)

    run_cli(job)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
