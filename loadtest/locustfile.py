"""Locust scenarios for the service: the student route, the teacher route, the cascade, mixed traffic.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 StudentUser            # web UI
    sd loadtest                                                                          # the step load

Users are closed-loop (no wait between requests): load is set by the number of users, and each user
sends its next request when the previous one is answered. They use ``FastHttpUser``
(geventhttpclient), which costs a fraction of the CPU of ``HttpUser``: on a 2-core machine locust
shares the CPU with the service, so the client's cost is part of what is measured.

Options of this locustfile (locust command line, or the environment variable in brackets):
- ``--texts-file`` [SD_LOADTEST_TEXTS]: one text per line (default: built-in movie-review sentences);
- ``--texts-per-request`` [SD_LOADTEST_BATCH]: texts in each request (default 1);
- ``--max-requests`` [SD_LOADTEST_MAX_REQUESTS]: stop the run after about that many requests (0 = no limit);
- ``--cascade-share`` [SD_LOADTEST_CASCADE]: "1" if the service has ``/v1/cascade/classify``, so MixedUser
  sends part of its traffic there (else that part goes to the student route);
- ``--summary-file``: where to write the run's totals as JSON when locust exits (``loadtest/run.py`` reads
  it). Written at exit from the final stats, so a run ended early by ``--max-requests`` keeps its numbers
  (locust's ``--csv`` files are written on a timer and can miss them).
A request counts as failed unless it is answered 200 with one result per text.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import gevent
from locust import constant, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.runners import STATE_STOPPED, STATE_STOPPING, WorkerRunner

STUDENT_ROUTE = "/v1/classify"
TEACHER_ROUTE = "/v1/teacher/classify"
CASCADE_ROUTE = "/v1/cascade/classify"

FALLBACK_TEXTS = [
    "a gripping , beautifully acted film that earns every one of its tears",
    "dull , predictable and far too long",
    "the performances are fine but the script never finds its footing",
    "one of the most charming comedies of the year",
    "an ambitious mess that is sometimes fascinating and often tedious",
    "it's a smart , funny and ultimately moving picture",
    "the plot is thin and the jokes fall flat",
    "a visually stunning adventure with a hollow center",
]


def load_texts(path: str | None) -> list[str]:
    """Non-empty lines of ``path``; the built-in sentences when no file is given."""
    if not path:
        return list(FALLBACK_TEXTS)
    texts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ValueError(f"{path}: no texts")
    return texts


_TEXTS: list[str] = []  # loaded once per locust process, when its options are known
_ENVIRONMENT: list[Any] = []  # this process's locust Environment, kept for the quit listener


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--texts-file", default="", env_var="SD_LOADTEST_TEXTS", help="one text per line")
    parser.add_argument("--texts-per-request", type=int, default=1, env_var="SD_LOADTEST_BATCH")
    parser.add_argument("--max-requests", type=int, default=0, env_var="SD_LOADTEST_MAX_REQUESTS",
                        help="stop after about that many requests (0 = no limit)")
    parser.add_argument("--cascade-share", default="", env_var="SD_LOADTEST_CASCADE",
                        help='"1": MixedUser also calls /v1/cascade/classify')
    parser.add_argument("--summary-file", default="", help="write the run's totals there as JSON at exit")


@events.init.add_listener
def _load_texts(environment: Any, **_kwargs: Any) -> None:
    options = environment.parsed_options
    _TEXTS[:] = load_texts(options.texts_file if options is not None else None)
    _ENVIRONMENT[:] = [environment]


def stats_summary(total: Any) -> dict[str, float]:
    """Totals of a locust ``StatsEntry`` (``runner.stats.total``), latencies in ms."""
    has_requests = total.num_requests > 0

    def percentile(q: float) -> float:
        # locust keeps response times rounded (two significant digits above 100 ms), the max exact: a
        # step of a few slow requests had p50 "870" over a max of 866.9. No percentile exceeds the max.
        return float(min(total.get_response_time_percentile(q), total.max_response_time)) if has_requests else 0.0

    return {
        "requests": total.num_requests,
        "failures": total.num_failures,
        "requests_per_s": total.total_rps,
        "p50_ms": percentile(0.5),
        "p95_ms": percentile(0.95),
        "p99_ms": percentile(0.99),
        "max_ms": total.max_response_time if has_requests else 0.0,
    }


@events.quit.add_listener
def _write_summary(**_kwargs: Any) -> None:
    """After the runner has stopped (and, on a master, its workers have sent their last stats)."""
    if not _ENVIRONMENT:
        return
    environment = _ENVIRONMENT[0]
    options, runner = environment.parsed_options, environment.runner
    if options is None or not options.summary_file or runner is None or isinstance(runner, WorkerRunner):
        return
    Path(options.summary_file).write_text(json.dumps(stats_summary(runner.stats.total)) + "\n", encoding="utf-8")


@events.test_start.add_listener
def _bound_request_count(environment: Any, **_kwargs: Any) -> None:
    """Stop the run once ``--max-requests`` requests are counted (checked on the master or local runner,
    which see every worker's stats; workers report every few seconds, so the bound is approximate)."""
    runner = environment.runner
    options = environment.parsed_options
    limit = int(options.max_requests) if options is not None else 0
    if not limit or runner is None or isinstance(runner, WorkerRunner):
        return

    def watch() -> None:
        while runner.state not in (STATE_STOPPING, STATE_STOPPED):
            if runner.stats.total.num_requests >= limit:
                # As locust's own --run-time limit does in a headless run: a master then gives its
                # workers half a second to send their last stats. (Calling stop() first made a 2-process
                # run here wait out the master's 65 s stop timeout before it quit.)
                runner.quit()
                return
            gevent.sleep(0.2)

    gevent.spawn(watch)


class _Classifier(FastHttpUser):
    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self._batch = max(1, int(options.texts_per_request)) if options is not None else 1
        self._cascade = options is not None and options.cascade_share == "1"
        self._texts_pool = _TEXTS or list(FALLBACK_TEXTS)
        self._rng = random.Random(id(self))  # each user starts at its own place in the texts

    def _texts(self) -> list[str]:
        pool = self._texts_pool
        start = self._rng.randrange(len(pool))
        return [pool[(start + i) % len(pool)] for i in range(self._batch)]

    def classify(self, route: str, name: str | None = None) -> None:
        texts = self._texts()
        with self.client.post(route, json={"texts": texts}, name=name or route, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            try:
                results = response.json()["results"]
            except (ValueError, KeyError, TypeError):
                response.failure("answer is not a JSON object with 'results'")
                return
            if len(results) != len(texts):
                response.failure(f"{len(results)} results for {len(texts)} texts")


class StudentUser(_Classifier):
    @task
    def student(self) -> None:
        self.classify(STUDENT_ROUTE)


class TeacherUser(_Classifier):
    @task
    def teacher(self) -> None:
        self.classify(TEACHER_ROUTE)


class CascadeUser(_Classifier):
    @task
    def cascade(self) -> None:
        self.classify(CASCADE_ROUTE)


class MixedUser(_Classifier):
    """Production-like traffic: mostly the student, some teacher calls (and the cascade if served)."""

    @task(8)
    def student(self) -> None:
        self.classify(STUDENT_ROUTE)

    @task(1)
    def teacher(self) -> None:
        self.classify(TEACHER_ROUTE)

    @task(1)
    def cascade_or_student(self) -> None:
        self.classify(CASCADE_ROUTE if self._cascade else STUDENT_ROUTE)
