"""Studies: each reads finished runs (or runs its own) and writes a report under ``reports/``.

- ``task_table.py``: the paper's Table 2 across tasks, and the corpus-size curve.
- ``int8_report.py``: an int8 table beside float16 and fastText.
- ``paper_scale.py``: the 1B-parameter student, trained and exported, with what it cost.
- ``teacher_speed.py``: how fast a teacher base fine-tunes and labels here, before committing hours.
- ``labeling_memory.py``: peak memory of labeling by batching rule and corpus size.

A study never changes a run's outputs; the pipeline never imports a study.
"""
