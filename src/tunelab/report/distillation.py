"""The report's distillation section: each `distill` row beside its teacher's row — the main metric and the
evaluation speed of both, the model a user would deploy against the one it learnt from.

A student row's teacher is found through its cells' `costs.json` (`teacher`: the teacher's cell id in a
sweep, else the teacher's run directory, which has no row of its own here).
"""

from __future__ import annotations

from tunelab.report.document import Section, Table, Text
from tunelab.report.leaderboard import Row, fmt_metric, fmt_number


def distillation_section(rows: list[Row], metric: str) -> Section | None:
    students = [row for row in rows if row.method == "distill"]
    if not students:
        return None
    row_of_cell = {cell.meta["id"]: row for row in rows for cell in row.cells}
    body = []
    for student in students:
        teachers = {cell.costs.get("teacher") for cell in student.cells}
        teacher_rows = {row_of_cell[t].group: row_of_cell[t] for t in teachers if t in row_of_cell}
        teacher = next(iter(teacher_rows.values())) if len(teacher_rows) == 1 else None
        name = teacher.group if teacher else ", ".join(sorted(str(t) for t in teachers))
        body.append([
            student.group, student.model, fmt_metric(metric, student.stats.get(metric), len(student.seeds)),
            fmt_number(student.costs.get("eval_examples_per_second")),
            name, teacher.model if teacher else "–",
            fmt_metric(metric, teacher.stats.get(metric), len(teacher.seeds)) if teacher else "–",
            fmt_number(teacher.costs.get("eval_examples_per_second")) if teacher else "–",
            speedup(student, teacher),
        ])
    return Section("Distillation", [
        Text("Each distilled student beside its teacher (an earlier entry of this sweep, cell by cell: same K and "
             "seed): test metric mean ± std over seeds, evaluation examples per second, and how many times faster "
             "the student labels the test split. The student trained on the teacher's soft labels only."),
        Table(["student", "student model", f"student {metric}", "student eval ex/s", "teacher", "teacher model",
               f"teacher {metric}", "teacher eval ex/s", "speed-up"], body),
    ])


def speedup(student: Row, teacher: Row | None) -> str:
    fast, slow = student.costs.get("eval_examples_per_second"), teacher.costs.get("eval_examples_per_second") if teacher else None
    return f"{fast / slow:.1f}×" if fast and slow else "–"
