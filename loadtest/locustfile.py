"""Locust scenarios for the service: the student route, the teacher route, the cascade, mixed traffic.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 StudentUser            # web UI
    .venv/bin/python -m loadtest.run                                                     # the step load

Users are closed-loop (no wait between requests): load is set by the number of users, and each user
sends its next request when the previous one is answered. They use ``FastHttpUser``
(geventhttpclient), which costs a fraction of the CPU of ``HttpUser``: on a 2-core machine locust
shares the CPU with the service, so the client's cost is part of what is measured.

Settings, from environment variables (the runner sets them; defaults work against a local service):
- ``SD_LOADTEST_TEXTS``: a file with one text per line (default: built-in movie-review sentences);
- ``SD_LOADTEST_BATCH``: texts per request (default 1);
- ``SD_LOADTEST_MAX_REQUESTS``: stop this locust process after that many requests (0 = no limit);
- ``SD_LOADTEST_CASCADE``: "1" if the service has ``/v1/cascade/classify`` (MixedUser then uses it).
A request counts as failed unless it is answered 200 with one result per text.
"""

from __future__ import annotations

import os
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


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


TEXTS = load_texts(os.environ.get("SD_LOADTEST_TEXTS"))
BATCH = max(1, _int_env("SD_LOADTEST_BATCH", 1))
MAX_REQUESTS = _int_env("SD_LOADTEST_MAX_REQUESTS", 0)
HAS_CASCADE = os.environ.get("SD_LOADTEST_CASCADE", "") == "1"

@events.test_start.add_listener
def _bound_request_count(environment: Any, **_kwargs: Any) -> None:
    """Stop the run once MAX_REQUESTS requests are counted (checked on the master or local runner,
    which see every worker's stats; workers report every few seconds, so the bound is approximate)."""
    runner = environment.runner
    if not MAX_REQUESTS or runner is None or isinstance(runner, WorkerRunner):
        return

    def watch() -> None:
        while runner.state not in (STATE_STOPPING, STATE_STOPPED):
            if runner.stats.total.num_requests >= MAX_REQUESTS:
                runner.quit()
                return
            gevent.sleep(0.2)

    gevent.spawn(watch)


class _Classifier(FastHttpUser):
    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        self._rng = random.Random(id(self))  # each user starts at its own place in the texts

    def _texts(self) -> list[str]:
        start = self._rng.randrange(len(TEXTS))
        return [TEXTS[(start + i) % len(TEXTS)] for i in range(BATCH)]

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
        self.classify(CASCADE_ROUTE if HAS_CASCADE else STUDENT_ROUTE)
