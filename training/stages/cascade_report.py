"""The cascade report (``reports/cascade-<name>.{md,png}``): the grid and the learned router side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

RULE_NAMES = {"grid": "grid on dev (confidence/coverage thresholds)", "router": "learned router (corpus slice)"}


def plot_curve(curve: list[dict[str, float]], point: dict[str, float], teacher_acc: float, path: Path,
               rows: dict[str, dict[str, Any]] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for cov in sorted({p["coverage_threshold"] for p in curve}):
        pts = sorted((p for p in curve if p["coverage_threshold"] == cov), key=lambda p: p["teacher_share"])
        ax.plot([p["teacher_share"] for p in pts], [p["dev_acc"] for p in pts], label=f"coverage < {cov}")
    ax.axhline(teacher_acc, color="black", linestyle="--", label="teacher alone")
    ax.scatter([point["teacher_share"]], [point["dev_acc"]], color="red", zorder=5, label="grid operating point")
    if rows and "router" in rows:
        r = rows["router"]
        ax.scatter([r["dev_teacher_share"]], [r["dev_acc"]], color="blue", marker="*", s=120, zorder=6,
                   label="learned router")
    ax.set_xlabel("share of texts sent to the teacher")
    ax.set_ylabel("cascade dev accuracy")
    ax.set_title("Cascade on dev: accuracy vs teacher share")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _router_lines(r: dict[str, Any]) -> list[str]:
    fit = r.get("router")
    if not fit:
        why = r.get("no_router") or "evaluate.router = false or distill.router_holdout = 0"
        return [f"No learned router: {why}.", ""]
    auc = ""
    if fit.get("lr_auc") is not None:
        auc = (f" On half of the slice, fitted on the other half, ROC AUC of the disagreement prediction: logistic "
               f"regression {fit['lr_auc']:.3f}, HistGradientBoosting {fit['hgb_auc']:.3f} (only the logistic "
               "regression is stored: its coefficients, applied with numpy in the service).")
    cap = ""
    if "threshold_from" in fit:
        cap = (f" The cap is then paid where the traffic is, on dev ({fit['cap_texts']} texts): threshold "
               f"{fit['traffic_cap_threshold']:.4f} there against {fit['slice_threshold']:.4f} on the slice; "
               f"the stored one is set by the {fit['threshold_from']}.")
    coef = ", ".join(f"{k} {v:+.2f}" for k, v in fit.get("coefficients", {}).items())
    if fit.get("answers_from") == "shadow student":
        source = ("texts of the transfer corpus, answered by a shadow student distilled without them (the served "
                  "student distilled on the whole corpus: the router costs it nothing)")
        who = "the shadow student"
    else:
        source = "texts of the transfer corpus held out of the served student's distillation"
        who = "the student"
    return [
        f"Learned router: fitted on {fit['slice_texts']} {source}, "
        f"on which {who} disagrees with the teacher on {100 * fit['slice_disagreement']:.1f}%. Temperature "
        f"{fit['temperature']:.3f} (fitted on the slice against the teacher's labels); defer when the predicted "
        f"disagreement is at least {fit['threshold']:.4f}: the smallest teacher share on the slice leaving at most "
        f"{100 * fit['target_gap']:.1f}% of the texts in disagreement, capped at {100 * fit['max_share']:.0f}% "
        f"(chosen: {100 * fit['slice_teacher_share']:.1f}%, {100 * fit['slice_disagreement_left']:.2f}% left)."
        f"{cap}{auc}",
        "",
        f"Standardised coefficients: {coef}.",
        "",
    ]


def render(r: dict[str, Any], png: str) -> str:
    p = r["operating_point"]
    goal = r.get("goal", {"gap": 0.005, "max_share": 0.3, "min_speedup": 3.0})
    lines = [
        "# Cascade: student first, teacher for the texts the rule defers",
        "",
        f"Command: `{r['meta']['command']}`  ",
        f"Machine: {r['meta']['machine']}, threads: {r['meta']['threads']}"
        + (f", {r['meta']['cpus']} CPUs, load average {r['meta']['load_average'][0]} -> "
           f"{r['meta']['load_average'][1]} over the throughput runs" if "load_average" in r["meta"] else "") + "  ",
        f"Date: {r['meta']['date']}",
        "",
        f"Teacher alone: dev {r['teacher_dev_acc']:.4f}, test {r['teacher_test_acc']:.4f}, "
        f"{r['teacher_samples_per_s']:.1f} texts/s (batch 32). Student alone: dev "
        f"{r.get('student_dev_acc', float('nan')):.4f}, test {r['student_test_acc']:.4f}.",
        "",
        f"Grid: operating point chosen on dev (smallest teacher share within 0.5 points of the teacher's dev "
        f"accuracy): temperature {p['temperature']:.3f}, defer when calibrated confidence < "
        f"{p['confidence_threshold']:.4f} or coverage < {p['coverage_threshold']}.",
        "",
        *_router_lines(r),
        f"Goal: test accuracy within {100 * goal['gap']:.1f} points of the teacher's, at most "
        f"{100 * goal['max_share']:.0f}% of test texts deferred, at least {goal['min_speedup']:.0f}x the "
        "teacher's texts/s.",
        "",
        "| rule | dev acc | dev deferred | test acc | test - teacher (points) | test deferred | texts/s | "
        "speed-up | goal met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = r.get("rules") or {"grid": {
        "dev_acc": p["dev_acc"], "dev_teacher_share": p["teacher_share"], "test_acc": r["cascade_test_acc"],
        "test_teacher_share": r["teacher_share"], "samples_per_s": r["cascade_samples_per_s"],
        "speedup": r["cascade_samples_per_s"] / r["teacher_samples_per_s"], "goal_met": None}}
    for name, row in rows.items():
        met = {True: "yes", False: "no", None: "-"}[row.get("goal_met")]
        lines.append(
            f"| {RULE_NAMES.get(name, name)} | {row['dev_acc']:.4f} | {100 * row['dev_teacher_share']:.1f}% "
            f"| {row['test_acc']:.4f} | {100 * (row['test_acc'] - r['teacher_test_acc']):+.2f} "
            f"| {100 * row['test_teacher_share']:.1f}% | {row['samples_per_s']:.1f} | {row['speedup']:.1f}x | {met} |"
        )
    lines += ["", f"![cascade curve]({png})", ""]
    return "\n".join(lines)
