"""``python -m training``: the training half of ``sd`` (``sd run``), kept as its own entry point.

``python -m training run -c configs/mr-demo.toml`` runs every step; ``python -m training <step> -c ...``
one of them; ``python -m training fetch-data`` fetches the corpora. The commands are ``sdcli.app``'s
plain functions, with the same one-line errors.
"""

from __future__ import annotations

import typer

from sdcli.app import (
    ConfigOption,
    corpus_curve,
    fetch_data,
    guarded,
    int8_report,
    labeling_memory_command,
    run,
    run_pipeline,
    task_table_command,
    teacher_speed_command,
)

app = typer.Typer(help="Sparse Distillation, offline: the pipeline's steps (see `sd --help` for the rest).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
app.command()(run)
app.command("fetch-data")(fetch_data)
app.command("task-table")(task_table_command)
app.command("corpus-curve")(corpus_curve)
app.command("int8-report")(int8_report)
app.command("teacher-speed")(teacher_speed_command)
app.command("labeling-memory")(labeling_memory_command)

STEP_HELP = {
    "data": "Fetch/read the labeled set and write the transfer corpus (runs/<name>/data).",
    "teacher": "Fine-tune the teacher on the training set, selected on dev accuracy.",
    "teacher-export": "Export the teacher to models/<name>-teacher (ONNX + tokenizer + manifest).",
    "label": "Label the transfer corpus with the teacher's logits (float32 shards; resumes).",
    "vocab": "Count 1- to 4-grams in bounded memory and keep the top K.",
    "features": "Turn the corpus into bags of vocabulary rows (memory-mapped for training).",
    "kd": "Distil the DAN on the teacher's logits: KL(teacher || student).",
    "ft": "Fine-tune the distilled DAN on the labeled set (cross-entropy).",
    "scratch": "Train the same DAN on the labeled set alone (the paper's baseline).",
    "export": "Export the student to models/<name> (shards + vocabulary + ONNX head + manifest).",
    "evaluate": "Score teacher, DANs and fastText on dev/test; write the accuracy report.",
    "cascade": "Calibrate the student->teacher cascade on dev; store it in the manifest; report on test.",
}


def _step_command(name: str, doc: str) -> None:
    def command(config: ConfigOption) -> None:
        guarded(lambda: run_pipeline(config, steps=[name]))

    command.__doc__ = doc
    app.command(name=name)(command)


for _name, _doc in STEP_HELP.items():
    _step_command(_name, _doc)


def main() -> None:
    from training.progress import quiet_library_bars

    quiet_library_bars()  # as ``sd`` does: no library \r bars in a pipe
    app()


if __name__ == "__main__":
    main()
