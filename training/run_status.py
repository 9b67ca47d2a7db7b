"""Where a run stands, step by step, from its folder alone (``sd status -c CONFIG``): for a run that takes
hours and goes on across sessions, what is finished, what is part done and how far, and how long each
step's invocations took (``run.json``, the one running now included).

It reads markers and small JSON files only, never a checkpoint, so it is quick beside a running job.
A step marked done was done for the settings it ran with; ``sd run`` checks them again and redoes what
they no longer match.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sdcore.model_format import MANIFEST
from training.config import RunConfig
from training.pipeline import STEPS, TEACHER_STEPS, shadow_wanted
from training.stages.distill import progress_file
from training.stages.run_folder import read_done
from training.stages.run_log import step_seconds
from training.stages.teacher_resume import PROGRESS, RESUME_DIR

State = Literal["done", "part done", "not started", "off", "reused", "skipped"]


@dataclass(frozen=True)
class StepState:
    step: str
    state: State
    detail: str = ""
    recorded_s: float = 0.0  # the finished invocations' wall time, from run.json


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _when(path: Path) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))


def _acc(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _teacher(config: RunConfig) -> tuple[State, str]:
    folder = config.run_folder
    if read_done(folder.teacher) is not None:
        m = _json(folder.teacher / "metrics.json")
        epochs = m.get("epochs") or []
        return "done", (f"{len(epochs)} epoch(s), best {m.get('best_epoch', '-')}: dev {_acc(m.get('dev_acc'))}, "
                        f"test {_acc(m.get('test_acc'))}")
    resume = config.run_dir / RESUME_DIR
    progress = _json(resume / PROGRESS)
    if progress:
        history = progress.get("history") or []
        epochs = ", ".join(f"{_acc(e.get('dev_acc'))} ({e.get('seconds', 0) / 60:.0f} min)" for e in history)
        return "part done", (f"{progress.get('epoch', 0)} of up to {config.teacher.epochs} epochs (dev acc: "
                             f"{epochs}); resumes after epoch {progress.get('epoch', 0)}")
    if (resume / "state.pt").is_file():
        return "part done", f"an epoch's state saved {_when(resume / 'state.pt')}; resumes from it"
    return "not started", ""


def _label(config: RunConfig) -> tuple[State, str]:
    out = config.run_folder.labels
    done = read_done(out)
    if done is not None:
        return "done", (f"{done.get('texts', 0):,} texts in {done.get('shards', 0)} shards, "
                        f"{done.get('texts_per_second', '-')} texts/s")
    digests = sorted(out.glob("logits-*.sha256")) if out.is_dir() else []
    if not digests:
        return "not started", ""
    corpus = _json(config.run_folder.data / "stats.json").get("corpus", {}).get("texts", 0)  # as written
    total = math.ceil(corpus / config.labeling.shard_size) if corpus else 0
    detail = f"{len(digests)} of {total or '?'} shards of {config.labeling.shard_size:,} texts; resumes by shard"
    pace = shard_pace([p.stat().st_mtime for p in digests])
    if pace and total > len(digests):
        detail += (f"; {config.labeling.shard_size / pace:.1f} texts/s over the last shards, about "
                   f"{(total - len(digests)) * pace / 3600:.1f} h to go while it runs")
    return "part done", detail


def shard_pace(finished_at: list[float], last: int = 8) -> float | None:
    """Seconds a shard, the median gap between the last ``last`` shards written (a pause between sessions is
    one gap, which the median leaves out); None with fewer than 3 shards."""
    times = sorted(finished_at)[-(last + 1):]
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    return gaps[len(gaps) // 2] if len(gaps) >= 2 and gaps[len(gaps) // 2] > 0 else None


def student_state(folder: Path, stage: str) -> tuple[State, str]:
    """A student stage in ``folder`` (a run's ``student/`` or ``router-student/``): done, or how far its
    checkpoint is."""
    done = read_done(folder, stage)
    if done is not None:
        history = done.get("history") or []
        return "done", (f"best epoch {done.get('best_epoch', '-')} of {len(history)}: dev "
                        f"{_acc(done.get('best_dev_acc'))}")
    last = folder / f"{stage}-last.pt"
    progress = _json(folder / progress_file(stage))
    if last.is_file() and progress:
        history = progress.get("history") or []
        accs = ", ".join(_acc(h.get("dev_acc")) for h in history)
        return "part done", (f"{progress.get('epoch')} of {progress.get('epochs')} epochs (dev acc: {accs}) in "
                             f"{float(progress.get('wall_s', 0.0)) / 60:.0f} min; resumes after epoch "
                             f"{progress.get('epoch')}")
    if last.is_file():
        return "part done", f"a checkpoint saved {_when(last)}; resumes after its epoch"
    return "not started", ""


def _router_student(config: RunConfig) -> tuple[State, str]:
    if not shadow_wanted(config):
        return "off", "distill.router_student is not \"shadow\", or the router or cascade is off"
    out = config.run_folder.router_student
    done = read_done(out)
    if done is not None and done.get("skipped"):
        return "skipped", str(done["skipped"])
    if done is not None:
        return "done", (f"{done.get('stage', '-')}, KD on {done.get('kd_texts', 0):,} texts; the slice "
                        f"{done.get('slice_texts', 0):,}")
    for stage in ("ft", "kd"):
        state, detail = student_state(out, stage)
        if state != "not started":
            return "part done", f"{stage}: {detail}"
    return "not started", ""


def _simple(config: RunConfig, step: str) -> tuple[State, str]:
    folder = config.run_folder
    if step == "export":
        return ("done", str(folder.student_dir)) if (folder.student_dir / MANIFEST).is_file() else ("not started", "")
    if step == "teacher-export":
        return ("done", str(folder.teacher_dir)) if (folder.teacher_dir / MANIFEST).is_file() else ("not started", "")
    if step == "cascade":
        if not config.evaluate.cascade:
            return "off", "evaluate.cascade = false"
        report = Path(config.evaluate.cascade_report or f"reports/cascade-{config.name}").with_suffix(".json")
        manifest = _json(folder.student_dir / MANIFEST)
        return ("done", str(report)) if "cascade" in manifest and report.is_file() else ("not started", "")
    if step == "evaluate":
        path = folder.folder("evaluate") / "results.json"
        return ("done", _when(path)) if path.is_file() else ("not started", "")
    done = read_done(folder.folder(step))
    if done is None:
        return "not started", ""
    facts = {k: done[k] for k in ("texts", "size", "words", "rows", "mean_coverage") if k in done}
    return "done", ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v:.3f}" for k, v in facts.items())


def run_status(config: RunConfig) -> list[StepState]:
    """Every step of ``config``'s run: its state, what it has made so far, its recorded time."""
    seconds = step_seconds(config.run_dir)
    rows: list[StepState] = []
    for step in STEPS:
        state: State
        if config.reuse_teacher_run and step in TEACHER_STEPS:
            state, detail = "reused", f"from {config.reuse_teacher_run}"
        elif step == "teacher":
            state, detail = _teacher(config)
        elif step == "label":
            state, detail = _label(config)
        elif step in ("kd", "ft", "scratch"):
            enabled = {"kd": True, "ft": config.finetune.enabled, "scratch": config.scratch.enabled}[step]
            state, detail = student_state(config.run_folder.student, step) if enabled else ("off", "")
        elif step == "router-student":
            state, detail = _router_student(config)
        elif step == "table-init" and config.student.init != "teacher":
            state, detail = "off", ""
        else:
            state, detail = _simple(config, step)
        rows.append(StepState(step, state, detail, seconds.get(step, 0.0)))
    return rows


def render_status(config: RunConfig, rows: list[StepState]) -> str:
    lines = [f"run {config.name} ({config.run_dir})", "",
             "| step | state | recorded time | detail |", "|---|---|---|---|"]
    for r in rows:
        recorded = f"{r.recorded_s / 60:.1f} min" if r.recorded_s else "-"
        lines.append(f"| {r.step} | {r.state} | {recorded} | {r.detail} |")
    todo = [r.step for r in rows if r.state in ("part done", "not started")]
    lines += ["", f"next: `sd run -c {config.source_path}` goes on from {todo[0]}" if todo else "every step is done",
              "(recorded time: the step's invocations in run.json, those cut short by Ctrl-C or SIGTERM too; "
              "one running now, or killed outright, up to its last heartbeat)"]
    return "\n".join(lines)
