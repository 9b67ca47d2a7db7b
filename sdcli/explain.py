"""``sd explain MODEL TEXT...|FILE``: which n-grams moved a student's label (service/runtimes/explain.py).

The texts are the arguments, or, when the one argument is a file (or ``-`` for stdin), its non-empty lines
(a ``.jsonl`` file: each line's ``"text"``). ``--json`` prints one JSON object per text, the same object as
an item of ``POST /v1/explain``'s ``results``; otherwise a readable table per text.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from sdcore.errors import ProjectError
from sdcore.model_format import MANIFEST, read_manifest_kind
from service.api.explain_schemas import TextExplanation
from service.api.routes.explain import shaped
from service.runtimes.contract import RuntimeOptions
from service.runtimes.explain import MAX_TOP_N, explain
from service.runtimes.student import StudentRuntime


class ExplainInputError(ProjectError, ValueError):
    """Texts or options that cannot be explained."""


def read_texts(args: Sequence[str]) -> list[str]:
    """The arguments as texts, or one file's (or stdin's, for ``-``) non-empty lines."""
    if len(args) == 1 and (args[0] == "-" or Path(args[0]).is_file()):
        source = args[0]
        lines = sys.stdin.read().splitlines() if source == "-" else Path(source).read_text("utf-8").splitlines()
        if source.endswith(".jsonl"):
            try:
                lines = [str(json.loads(line)["text"]) for line in lines if line.strip()]
            except (ValueError, KeyError, TypeError) as exc:
                raise ExplainInputError(f"{source}: each line must be a JSON object with a \"text\" ({exc})") from None
        texts = [line for line in lines if line.strip()]
        if not texts:
            raise ExplainInputError(f"{source} holds no text")
        return texts
    texts = [a for a in args if a.strip()]
    if not texts:
        raise ExplainInputError("no text given", hint="pass texts, a file of one text per line, or - for stdin")
    return texts


def explain_model(model: Path, texts: Sequence[str], top_n: int = 10) -> list[TextExplanation]:
    """Load a student folder and explain ``texts``; a teacher folder is refused with the reason."""
    if not 1 <= top_n <= MAX_TOP_N:
        raise ExplainInputError(f"--top-n must be in 1..{MAX_TOP_N}, got {top_n}")
    if read_manifest_kind(model) != "student":
        raise ExplainInputError(f"{model / MANIFEST}: is a teacher; explanations are for students only")
    runtime = StudentRuntime.load(model, RuntimeOptions(threads=1))
    return [shaped(e, runtime.labels) for e in explain(runtime, texts, top_n)]


def render(text: str, e: TextExplanation) -> str:
    scores = ", ".join(f"{label} {p:.3f}" for label, p in e.scores.items())
    lines = [text, f"  -> {e.label} ({scores}); coverage {e.coverage:.0%}, {e.ngrams_found} n-grams found"]
    width = max((len(g.ngram) for g in e.ngrams), default=0)
    for g in e.ngrams:
        times = f"  x{g.count}" if g.count > 1 else ""
        lines.append(f"  {g.ngram:<{width}}  {g.effect:+.4f}{times}")
    return "\n".join(lines)


def explain_command(model: Path, args: Sequence[str], top_n: int, as_json: bool) -> None:
    texts = read_texts(args)
    for text, e in zip(texts, explain_model(model, texts, top_n), strict=True):
        print(e.model_dump_json() if as_json else render(text, e) + "\n", flush=True)
