"""The load test's pure parts: locust's summary, the knee, the stop rule, the goals, the report."""

from __future__ import annotations

import dataclasses

import pytest

from loadtest.steps import (
    Step,
    best_under,
    check_goals,
    knee,
    parse_summary,
    render_markdown,
    should_stop,
    steps_table,
)

# What loadtest/locustfile.py writes at exit (--summary-file).
SUMMARY = '{"requests": 740, "failures": 2, "requests_per_s": 379.4, "p50_ms": 10, "p95_ms": 16, "p99_ms": 20, ' \
    '"max_ms": 25.2}'


def step(users: int, rps: float, p99: float, failures: int = 0, scenario: str = "student x1", texts: int = 1,
         requests: int = 1000) -> Step:
    return Step(scenario, "/v1/classify", texts, users, requests, failures, rps, p99 / 3, p99 / 2, p99, p99 * 2, 10.0)


def test_parse_summary_reads_every_total() -> None:
    assert parse_summary(SUMMARY) == {"requests": 740, "failures": 2, "requests_per_s": 379.4, "p50_ms": 10,
                                      "p95_ms": 16, "p99_ms": 20, "max_ms": 25.2}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"requests": 1}', "lacks failures"),
        (SUMMARY.replace("379.4", '"fast"'), "non-numbers for requests_per_s"),
    ],
)
def test_parse_summary_rejects_damaged_files(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_summary(text)


def test_knee_is_the_fastest_healthy_step() -> None:
    steps = [step(1, 200, 5), step(4, 600, 30), step(16, 900, 99), step(32, 950, 180), step(64, 990, 20, failures=3)]
    assert knee(steps) == steps[2]


def test_knee_is_none_when_no_step_is_healthy() -> None:
    assert knee([step(1, 2, 500), step(4, 3, 1500)]) is None
    assert knee([]) is None


def test_a_step_with_no_request_is_not_healthy() -> None:
    assert not step(1, 0, 0, requests=0).healthy


def test_should_stop_past_saturation() -> None:
    assert not should_stop(step(8, 900, 150))
    assert should_stop(step(8, 900, 2500))
    assert should_stop(step(8, 900, 10, failures=300))
    assert should_stop(step(8, 0, 0, requests=0))


def test_best_under_a_latency_bound() -> None:
    steps = [step(1, 200, 5), step(4, 600, 45), step(16, 900, 60)]
    assert best_under(steps, 50) == steps[1]
    assert best_under(steps, 1) is None


def test_goals_met_and_missed() -> None:
    steps = [
        step(8, 2200, 40),
        step(4, 100, 40, scenario="student x32", texts=32),  # 3,200 texts/s
        step(1, 2, 90, scenario="teacher x32", texts=32),  # 64 texts/s
    ]
    single, ratio = check_goals(steps)
    assert single.met is True and "2,200" in single.detail and single.name.startswith("student route >= 2,000")
    assert ratio.met is True and "50.0x" in ratio.detail
    slow = [step(8, 1900, 40), *steps[1:2], step(1, 4, 90, scenario="teacher x32", texts=32)]
    single, ratio = check_goals(slow)
    assert single.met is False and ratio.met is False  # 1,900 req/s; 3,200 / 128 = 25x
    # Where the steps carry each side's CPU, the goal line says it.
    measured = [dataclasses.replace(steps[0], service_cpu_cores=0.97, locust_cpu_cores=0.55), *steps[1:]]
    assert "CPU: service 0.97 cores, locust 0.55" in check_goals(measured)[0].detail


def test_goals_not_measured() -> None:
    assert [g.met for g in check_goals([])] == [None, None]


def test_teacher_without_a_healthy_step_uses_its_best_failure_free_step() -> None:
    steps = [step(4, 100, 40, scenario="student x32", texts=32), step(1, 2, 500, scenario="teacher x32", texts=32)]
    ratio = check_goals(steps)[1]
    assert ratio.met is True and "no teacher step had p99 < 100 ms" in ratio.detail


def test_report_marks_knees_and_lists_goals() -> None:
    steps = [step(1, 200, 5), step(4, 600, 30), step(16, 650, 300)]
    table = steps_table(steps)
    assert table.count("**knee**") == 1 and "| student x1 | 4 |" in table
    report = {"command": "python -m loadtest.run", "machine": "m", "date": "d", "loadavg_start": [1, 1, 1],
              "loadavg_end": [1, 1, 1], "load_note": "", "service_command": "python -m service", "locust": "l",
              "step_s": 10, "max_requests": 1000, "notes": ["a note"]}
    text = render_markdown(report, steps, check_goals(steps))
    assert "## Knees" in text and "| student x1 | 4 | 600.0 |" in text and "- a note" in text
