"""``sd peers``: train every peer on a finished run's data, each in its own process, score them and write
``reports/peers-<run>.{md,json}`` beside the run's own accuracy report.

A peer whose result is already there for the same input digest is reused (the study resumes); a peer
that fails is recorded with the end of its log and the others go on; the command then exits non-zero.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sdcore.atomic import atomic_write_bytes, atomic_write_json
from sdcore.errors import ProjectError
from sdcore.machine import machine, shown_path
from training.config import RunConfig
from training.intervals import wilson
from training.studies.peers.inputs import write_peer_inputs

ISOLATED_WORKER = Path(__file__).with_name("isolated.py")
DEFAULT_PEERS_PYTHON = Path(".venv-peers/bin/python")
# peer -> (the process that trains it, the result files it writes)
PEERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "fasttext_kd": ("project", ("fasttext_kd", "fasttext_kd_ftz")),
    "model2vec": ("isolated", ("model2vec",)),
    "model2vec_kd": ("isolated", ("model2vec_kd",)),
    "setfit": ("isolated", ("setfit",)),
}
LABELS = {
    "fasttext_kd": "fastText on the teacher's labels (word 1-4-grams, char n-grams, tuned on dev)",
    "fasttext_kd_ftz": "fastText on the teacher's labels, quantized (.ftz)",
    "model2vec": "Model2Vec (distilled from the teacher base) + classifier on the gold set",
    "model2vec_kd": "Model2Vec + classifier on the teacher's labels",
    "setfit": "SetFit on the teacher base, gold set (transformer cost)",
}


class PeerError(ProjectError):
    """A peer could not be trained, or the study's inputs are missing."""


def _command(peer: str, input_path: Path, out: Path, peers_python: Path, threads: int) -> list[str]:
    where, _ = PEERS[peer]
    if where == "project":
        return [sys.executable, "-m", "training.studies.peers.fasttext_kd", "--input", str(input_path),
                "--output", str(out), "--threads", str(threads)]
    return [str(peers_python), str(ISOLATED_WORKER), "--method", peer, "--input", str(input_path),
            "--output", str(out)]


def _scored(result: dict[str, Any], dev: list[int], test: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split, gold in (("dev", dev), ("test", test)):
        predicted = result[f"{split}_pred"]
        if len(predicted) != len(gold):
            raise PeerError(f"{result['method']}: {len(predicted)} {split} predictions for {len(gold)} texts")
        correct = sum(int(p == g) for p, g in zip(predicted, gold, strict=True))
        out[f"{split}_acc"] = round(correct / len(gold), 4)
        out[f"{split}_ci95"] = [round(x, 4) for x in wilson(correct, len(gold))]
    return {**out, "train_seconds": result["train_seconds"], "model_bytes": result["model_bytes"],
            "settings": result.get("settings", {}), "versions": result.get("versions", {}),
            "model_path": shown_path(result["model_path"]) if result.get("model_path") else None}


def _train_peer(peer: str, input_path: Path, digest: str, folder: Path, peers_python: Path, threads: int,
                timeout_s: float) -> dict[str, Any]:
    """The peer's result files, trained now unless already there for this input digest."""
    out = folder / peer
    stamp = out / "input.sha256"
    names = PEERS[peer][1]
    if stamp.is_file() and stamp.read_text().strip() == digest and all((out / f"{n}.json").is_file() for n in names):
        print(f"[peers] {peer}: done before for this input, reused", flush=True)
    else:
        if PEERS[peer][0] == "isolated" and not peers_python.is_file():
            raise PeerError(f"{peer}: no peers environment at {peers_python}", hint="run `make peers-env` first")
        out.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        print(f"[peers] {peer}: training in its own process", flush=True)
        started = time.perf_counter()
        log = out / "log.txt"
        with log.open("w", encoding="utf-8") as f:
            try:
                code = subprocess.run(_command(peer, input_path, out, peers_python, threads), stdout=f,
                                      stderr=subprocess.STDOUT, timeout=timeout_s, check=False,
                                      env={**os.environ, "SD_PEER_THREADS": str(threads)}).returncode
            except subprocess.TimeoutExpired:
                code = -1
        if code != 0:
            tail = " | ".join(log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:])
            raise PeerError(f"{peer}: exit {code} after {time.perf_counter() - started:.0f} s ({log}): {tail}")
        stamp.write_text(digest + "\n")
    return {n: json.loads((out / f"{n}.json").read_text(encoding="utf-8")) for n in names}


def run_peers(config: RunConfig, peers: list[str], peers_python: Path = DEFAULT_PEERS_PYTHON, threads: int = 2,
              max_kd_texts: int = 0, timeout_s: float = 3600, report: Path | None = None) -> dict[str, Any]:
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise PeerError(f"unknown peer(s) {unknown}; peers are {list(PEERS)}")
    folder = config.run_dir / "peers"
    print(f"[peers] {config.name}: writing the peers' inputs", flush=True)
    input_path, digest = write_peer_inputs(config, folder, max_kd_texts)
    inputs = json.loads(input_path.read_text(encoding="utf-8"))
    dev, test = inputs["dev"]["labels"], inputs["test"]["labels"]
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for peer in peers:
        try:
            for name, result in _train_peer(peer, input_path, digest, folder, Path(peers_python), threads,
                                            timeout_s).items():
                results[name] = _scored(result, dev, test)
                print(f"[peers] {name}: dev {results[name]['dev_acc']:.4f}, test {results[name]['test_acc']:.4f}",
                      flush=True)
        except PeerError as exc:
            failures[peer] = exc.one_line()
            print(f"[peers] {peer}: FAILED: {exc.one_line()}", flush=True)
    report = report or Path(f"reports/peers-{config.name}")
    accuracy = _read_accuracy(config)
    table = {"peers": results, "failed": failures, "run": _run_rows(accuracy),
             "meta": {"config": config.source_path or config.name, "command": " ".join(["sd", *sys.argv[1:]]),
                      "machine": machine(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
                      "n_dev": len(dev), "n_test": len(test), "kd_texts": len(inputs["kd"]["texts"]),
                      "corpus_texts": inputs["kd"]["corpus_texts"], "base": shown_path(inputs["base"]),
                      "max_kd_texts": max_kd_texts, "threads": threads, "input_sha256": digest}}
    atomic_write_json(report.with_suffix(".json"), table)
    atomic_write_bytes(report.with_suffix(".md"), render_markdown(table).encode("utf-8"))
    print(render_markdown(table))
    if failures:
        raise PeerError(f"{len(failures)} peer(s) failed: {', '.join(failures)}; the others are in {report}.md")
    return table


def _read_accuracy(config: RunConfig) -> dict[str, Any]:
    path = Path(config.evaluate.report or f"reports/accuracy-{config.name}").with_suffix(".json")
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _run_rows(accuracy: dict[str, Any]) -> dict[str, Any]:
    """The run's own systems (teacher, DAN KD+FT, gold fastText) from its accuracy report, for the table."""
    return {k: {f: accuracy[k][f] for f in ("dev_acc", "test_acc", "dev_ci95", "test_ci95")}
            for k in ("teacher", "dan_kd_ft", "fasttext") if k in accuracy}


RUN_LABELS = {"teacher": "Teacher (the run's)", "dan_kd_ft": "DAN KD+FT (the run's student)",
              "fasttext": "fastText on the gold set (the run's evaluate step)"}


def render_markdown(table: dict[str, Any]) -> str:
    meta = table["meta"]
    lines = [f"# Peers: {meta['config']}", "", f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}  ",
             f"Date: {meta['date']}  ",
             f"Dev {meta['n_dev']} texts, test {meta['n_test']}; the peers' KD set: {meta['kd_texts']:,} texts "
             f"({meta['corpus_texts']:,} teacher-labeled corpus texts + the gold training set). "
             f"Base encoder: `{meta['base']}`.", "",
             "| system | dev acc | dev 95% CI | test acc | test 95% CI | train s | model MB |",
             "|---|---|---|---|---|---|---|"]
    rows = [(RUN_LABELS[k], r, None) for k, r in table["run"].items()]
    rows += [(LABELS.get(k, k), r, r) for k, r in table["peers"].items()]
    for label, r, facts in rows:
        extra = f"{facts['train_seconds']:.0f} | {facts['model_bytes'] / 1e6:.1f}" if facts else "- | -"
        lines.append(f"| {label} | {r['dev_acc']:.4f} | {r['dev_ci95'][0]:.3f}-{r['dev_ci95'][1]:.3f} | "
                     f"{r['test_acc']:.4f} | {r['test_ci95'][0]:.3f}-{r['test_ci95'][1]:.3f} | {extra} |")
    student = table["run"].get("dan_kd_ft")
    if student:
        lines += ["", "DAN KD+FT minus each peer, test points (goal: >= +2 over every peer at student cost):", ""]
        for key, r in table["peers"].items():
            gain = 100 * (student["test_acc"] - r["test_acc"])
            verdict = "" if key == "setfit" else (" (met)" if gain >= 2.0 else " (not met)")
            lines.append(f"- {key}: {gain:+.1f}{verdict}")
    for peer, why in table["failed"].items():
        lines.append(f"- {peer}: FAILED: {why}")
    lines += ["", "Settings chosen: " + "; ".join(f"{k}: {json.dumps(r['settings'].get('chosen', r['settings']))}"
                                                 for k, r in table["peers"].items()), ""]
    return "\n".join(lines) + "\n"
