"""``sd``: the one command line of the project (spaCy's CLI is the model).

Every command is a thin wrapper over a plain function that tests and notebooks call too. The
project's own errors (``sdcore.errors.ProjectError``: a bad data file, a missing step input, a bad
config key, a missing model folder) print one line with the fix and exit non-zero, with no
traceback; any other exception is a bug and keeps its traceback.

Heavy imports (torch, transformers, uvicorn) happen inside the commands, so ``sd --help`` is quick.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

# A ProjectError becomes one line and a non-zero exit; anything else propagates.
from sdcore.errors import exit_on_project_error as guarded
from training.cli import ConfigOption, fetch_data, run, status

T = TypeVar("T")

HELP = (
    "Sparse Distillation (Ye et al., NAACL 2022): distil a transformer teacher into a big sparse n-gram "
    "DAN student, and serve both. One config file describes a run; see configs/mr-demo.toml."
)
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}



def _offline() -> None:
    # Offline always: weights and data come from local folders and packages, never from a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# --- plain functions behind the commands -------------------------------------------------------


def init_config(out: Path, base: Path | None = None, name: str = "my-run") -> Path:
    """Write a config with every setting and its default (or ``base``'s value) filled in."""
    from training.config import RunConfig, load_config, render_toml

    config = load_config(base) if base is not None else RunConfig(name=name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_toml(config), encoding="utf-8")
    return out


# --- the commands ------------------------------------------------------------------------------

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)


# The pipeline's two commands are ``python -m training``'s, registered here as they are.
app.command()(run)
app.command("fetch-data")(fetch_data)
app.command()(status)


# Each short task name is its demo config (the runs `sd peers` scores); the longer runs are columns of their own.
DEFAULT_TASK_REPORTS = ("mr=reports/accuracy-mr-demo", "rt=reports/accuracy-rt-demo", "trec=reports/accuracy-trec-demo",
                        "sms-spam=reports/accuracy-sms-spam-demo", "rt-300k=reports/accuracy-rt",
                        "imdb=reports/accuracy-imdb-budget", "rt-mpnet=reports/accuracy-rt-mpnet",
                        "rt-mpnet-300k=reports/accuracy-rt-mpnet-300k", "mr-mpnet=reports/accuracy-mr-mpnet")


def task_table(reports: list[str], out: Path) -> Path:
    """One accuracy table across tasks (the paper's Table 2) from TASK=REPORT pairs."""
    from training.pipeline import StepError
    from training.studies.task_table import write_task_table

    pairs = [item.split("=", 1) for item in reports]
    if any(len(p) != 2 or not all(p) for p in pairs):
        raise StepError("--task takes TASK=REPORT, e.g. rt=reports/accuracy-rt")
    write_task_table({n: Path(r) for n, r in pairs}, out, "sd task-table " + " ".join(sys.argv[2:]))
    return out


@app.command("task-table")
def task_table_command(
    task: Annotated[
        list[str] | None, typer.Option(help="TASK=REPORT (an accuracy report written by evaluate); repeatable.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Writes OUT.md and OUT.json.")] = Path("reports/accuracy"),
) -> None:
    """One accuracy table across tasks (the paper's Table 2) from the runs' accuracy reports."""
    guarded(lambda: task_table(task or list(DEFAULT_TASK_REPORTS), out))
    typer.echo(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


@app.command("corpus-curve")
def corpus_curve(
    task: Annotated[str, typer.Argument(help="The task the runs share, e.g. rt.")],
    reports: Annotated[list[Path], typer.Argument(help="Accuracy reports of runs that differ in corpus size only.")],
    out: Annotated[Path | None, typer.Option(help="Default reports/corpus-size-TASK.")] = None,
) -> None:
    """Retention against transfer-corpus size (table and PNG) from the runs' accuracy reports."""
    from training.studies.task_table import write_corpus_curve

    target = out or Path(f"reports/corpus-size-{task}")
    guarded(lambda: write_corpus_curve(task, reports, target, "sd corpus-curve " + " ".join(sys.argv[2:])))
    typer.echo(f"wrote {target.with_suffix('.md')}, .json and .png")


@app.command("subwords")
def subwords_command(
    pair: Annotated[list[str], typer.Argument(help="TASK=WORD_CONFIG,SUBWORD_CONFIG: two finished runs that share "
                                                   "their teacher labels, e.g. rt=configs/rt-demo.toml,"
                                                   "configs/rt-demo-subwords.toml.")],
    out: Annotated[Path, typer.Option(help="Writes OUT.md and OUT.json (other tasks in it are kept).")]
    = Path("reports/subwords"),
) -> None:
    """Word n-grams alone against word n-grams + hashed subwords (featurizer spec v2), per task: accuracy,
    the low-coverage slice's, the unknown-word texts', and the table each needs."""

    def work() -> None:
        from training.config import load_config
        from training.pipeline import StepError
        from training.studies.subwords import write_subwords_report

        pairs = {}
        for item in pair:
            task, _, configs = item.partition("=")
            paths = configs.split(",")
            if not task or len(paths) != 2 or not all(paths):
                raise StepError(f"{item!r}: expected TASK=WORD_CONFIG,SUBWORD_CONFIG",
                                hint="e.g. mr=configs/mr-demo.toml,configs/mr-demo-subwords.toml")
            pairs[task] = (load_config(Path(paths[0])), load_config(Path(paths[1])))
        write_subwords_report(pairs, out, "sd subwords " + " ".join(sys.argv[2:]))

    guarded(work)
    typer.echo(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


@app.command("int8-report")
def int8_report(
    config: ConfigOption,
    out: Annotated[Path | None, typer.Option(help="int8 model folder (default models/<name>-int8).")] = None,
    report: Annotated[Path | None, typer.Option(help="Report path without suffix (reports/int8-<name>).")] = None,
    fasttext: Annotated[bool, typer.Option(help="Also score fastText before and after its quantize.")] = True,
) -> None:
    """Re-export the run's student with an int8 table; score it beside the float16 export and fastText."""
    from training.config import load_config

    _offline()

    def work() -> None:
        from training.studies.int8_report import int8_report as make_report

        make_report(load_config(config), out, report, fasttext)

    guarded(work)


@app.command("peers")
def peers_command(
    config: ConfigOption,
    peer: Annotated[list[str] | None, typer.Option("--peer", help="Only this peer (repeatable): fasttext_kd, "
                                                   "model2vec, model2vec_kd, setfit.")] = None,
    peers_python: Annotated[Path, typer.Option(help="Python of the peers' environment (`make peers-env`).")]
    = Path(".venv-peers/bin/python"),
    threads: Annotated[int, typer.Option(min=1, help="Threads for each peer's training.")] = 2,
    max_kd_texts: Annotated[int, typer.Option(min=0, help="Keep the first N corpus texts (0: all KD saw).")] = 0,
    report: Annotated[Path | None, typer.Option(help="Report path without suffix (reports/peers-<name>).")] = None,
) -> None:
    """Train and score what a user would pick instead (fastText and Model2Vec on the teacher's labels,
    SetFit) on a finished run's own data; reports/peers-<name>.{md,json}."""
    from training.config import load_config

    _offline()

    def work() -> None:
        from training.studies.peers.study import PEERS, run_peers

        run_peers(load_config(config), list(peer or PEERS), peers_python, threads, max_kd_texts, report=report)

    guarded(work)


@app.command("init-config")
def init_config_command(
    out: Annotated[Path, typer.Argument(help="Where to write the config, e.g. configs/my-run.toml.")],
    base: Annotated[Path | None, typer.Option("--from-config", help="Start from this config's values.")] = None,
    name: Annotated[str, typer.Option(help="The run's name (without --from-config).")] = "my-run",
) -> None:
    """Write a config with every setting filled in (defaults, or another config's values)."""
    typer.echo(f"wrote {guarded(lambda: init_config(out, base, name))}")


def teacher_speed(base: str, task: str, max_length: int, texts: int, batch_size: int, train_steps: int,
                  cache_dir: Path) -> dict[str, Any]:
    """Time a teacher base's fine-tuning and labeling; appends a row to reports/teacher-speed.{md,json}."""
    from training.data.tasks import TASKS
    from training.pipeline import StepError
    from training.studies.teacher_speed import append_report, measure_teacher_speed

    if task not in TASKS:
        raise StepError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    row = measure_teacher_speed(base, task, max_length, texts, batch_size, train_steps, cache_dir)
    append_report(row, "sd teacher-speed " + " ".join(sys.argv[2:]))
    return row


@app.command("teacher-speed")
def teacher_speed_command(
    base: Annotated[str, typer.Option(help="A named base (all-MiniLM-L6-v2, all-mpnet-base-v2) or a folder.")] = "",
    task: Annotated[str, typer.Option(help="Whose training texts to time (mr, rt, trec, sms-spam, imdb).")] = "rt",
    max_length: Annotated[int, typer.Option(help="Truncation length in tokens.")] = 128,
    texts: Annotated[int, typer.Option(help="Texts to label (and to draw training batches from).")] = 256,
    batch_size: Annotated[int, typer.Option()] = 32,
    train_steps: Annotated[int, typer.Option(help="Timed AdamW steps (after one untimed).")] = 4,
    cache_dir: Annotated[Path, typer.Option()] = Path(".cache/data"),
) -> None:
    """Time a teacher base's fine-tuning and labeling here; append to reports/teacher-speed.{md,json}."""
    _offline()
    row = guarded(lambda: teacher_speed(base, task, max_length, texts, batch_size, train_steps, cache_dir))
    typer.echo(json.dumps(row))


def labeling_memory(teacher: Path, task: str, max_length: int, sizes: list[int], batch_size: int, max_tokens: int,
                    cache_dir: Path, out: Path) -> list[dict[str, Any]]:
    """Peak RSS of labeling by corpus size, with and without a token budget (each in a fresh process)."""
    from training.data.tasks import TASKS
    from training.studies.labeling_memory import machine_facts, measure, write_report

    facts = {**machine_facts(), "command": "sd labeling-memory " + " ".join(sys.argv[2:]), "teacher": str(teacher),
             "task": task}
    texts = TASKS[task].load(cache_dir).train.texts
    rows = []
    for size in sizes:
        for budget in (0, max_tokens):
            rows.append(measure(teacher, texts[:size], batch_size, budget, max_length))
            typer.echo(json.dumps(rows[-1]))
    rows.append(measure(teacher, texts[: max(sizes)], batch_size, 0, max_length, arena=False))
    typer.echo(json.dumps(rows[-1]))
    write_report(rows, facts, out)
    return rows


@app.command("labeling-memory")
def labeling_memory_command(
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
    guarded(lambda: labeling_memory(teacher, task, max_length, sizes or [256, 1024], batch_size, max_tokens,
                                    cache_dir, out))


ModelArgument = Annotated[Path, typer.Argument(help="An exported model folder, student or teacher (models/<name>).")]
BatchOption = Annotated[int, typer.Option(min=1, help="Texts per model call.")]
ThreadsOption = Annotated[int | None, typer.Option(min=1, help="onnxruntime threads (default: one per core).")]


@app.command()
def predict(
    model: ModelArgument,
    file: Annotated[str, typer.Argument(help="Texts: one a line, or JSONL with a \"text\" field; - for stdin.")],
    top_k: Annotated[int | None, typer.Option(min=1, help="Keep at most K labels in scores, best first.")] = None,
    threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Keep only labels with at least this probability.")
    ] = None,
    raw: Annotated[bool, typer.Option(help="Also write every label's raw logit.")] = False,
    input_format: Annotated[
        str, typer.Option("--format", help="auto (JSONL for .jsonl, or stdin starting with '{'), text or jsonl.")
    ] = "auto",
    batch_size: BatchOption = 256,
    threads: ThreadsOption = None,
) -> None:
    """Classify a file (or stdin) with a student or teacher: one JSON answer a line on stdout."""
    from sdcli.predict import predict_file
    from service.answers import AnswerOptions

    options = AnswerOptions(top_k=top_k, threshold=threshold, raw=raw)
    guarded(lambda: predict_file(model, file, sys.stdout, options, batch_size, threads, input_format))


@app.command("test")
def test_command(
    model: ModelArgument,
    file: Annotated[Path, typer.Argument(help="Labeled texts: .csv/.tsv (text, label header) or .jsonl.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
    batch_size: BatchOption = 256,
    threads: ThreadsOption = None,
) -> None:
    """Score a student or teacher on a labeled file: accuracy (95% CI), per-class P/R/F1, confusion, coverage."""
    from sdcli.scoring import model_test

    guarded(lambda: model_test(model, file, json_out, batch_size, threads))


@app.command(context_settings=PASS_THROUGH)
def serve(ctx: typer.Context) -> None:
    """Start the HTTP service (every `python -m service` flag; `sd serve --help` lists them)."""
    from service.__main__ import main as serve_main

    raise typer.Exit(guarded(lambda: serve_main(list(ctx.args))))


@app.command()
def demo(config: ConfigOption = Path("configs/mr-demo.toml")) -> None:
    """Serve a trained run's models, answer a few texts on every route, stop (the end of `make demo`)."""
    from sdcli.demo import demo as run_demo

    guarded(lambda: run_demo(config))


@app.command()
def explain(
    model: Annotated[Path, typer.Argument(help="A student model folder, e.g. models/mr-demo.")],
    texts: Annotated[list[str], typer.Argument(help="Texts; or a file, a text a line (.jsonl: \"text\"); - = stdin.")],
    top_n: Annotated[int, typer.Option(help="N-grams shown per text, by effect on the predicted label.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per text, as POST /v1/explain.")] = False,
) -> None:
    """Which n-grams moved the student's label: each left out, its effect on every label's probability."""
    from sdcli.explain import explain_command

    guarded(lambda: explain_command(model, texts, top_n, as_json))


def _pass_through(name: str, module: str, doc: str) -> None:
    def command(ctx: typer.Context) -> None:
        import importlib

        main = importlib.import_module(module).main
        raise typer.Exit(guarded(lambda: main(list(ctx.args))) or 0)

    command.__doc__ = doc
    app.command(name, context_settings=PASS_THROUGH)(command)


for _name, _module, _doc in (
    ("bench", "loadtest.bench", "Text in -> probabilities out for every system: reports/bench.{md,json,png}."),
    ("loadtest", "loadtest.run", "The service under a locust step load on loopback: reports/loadtest.*."),
    ("fuzz", "sdcli.fuzz", "schemathesis against the service's OpenAPI on a real server process."),
    ("paper-scale", "training.studies.paper_scale", "Train, export the 1B student: reports/paper-scale.*."),
    ("bench-profile", "loadtest.bench_profile", "cProfile of the student's serving path on one workload."),
    ("bench-pool", "loadtest.bench_pool", "The student's pooling at several chunk sizes."),
    ("bench-explain", "loadtest.bench_explain", "What /v1/explain costs per text beside a prediction."),
    ("scale-out-bench", "training.scale.scale_out_bench", "Labeling throughput, local vs Ray workers."),
):
    _pass_through(_name, _module, _doc + " (Flags pass through; --help lists them.)")


def main() -> None:
    from training.progress import quiet_library_bars

    quiet_library_bars()
    app()
