"""The offline pipeline of Sparse Distillation: from a run config to the exported models of ``models/``.

- ``config.py``: one run config (TOML under ``configs/``), one pydantic model per stage.
- ``pipeline.py``: the run: every step in order, each skipped when its output is already done.
- ``cli.py`` / ``__main__.py``: ``python -m training`` (the pipeline's commands; ``sd`` registers the same).
- ``stages/``: one module per pipeline step, in run order, and the run-folder contract between them.
- ``data/``: where texts and weights come from: built-in tasks, pinned package sources, teacher bases.
- ``studies/``: report-producing studies over finished runs (task table, corpus curve, int8, peers, ...).
- ``scale/``: the same labeling and counting on a Ray cluster (``engine = "ray"``).
- ``testing/``: tiny real models built with the real code, for tests, demos and benchmarks.
- ``progress.py``, ``intervals.py``: progress lines and confidence intervals, used across the folders.

Imports point down: studies -> pipeline -> stages -> data -> ``sdcore``; nothing here imports ``sdcli``,
``loadtest`` or the service's HTTP layer.
"""
