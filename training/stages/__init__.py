"""The pipeline's steps, one module (or a few) per step, in run order. Steps talk only through the files
of the run folder (``run_folder.py``: where each step's output lives and its done-marker).

- ``data``: ``data_stage.py`` (labeled splits + transfer corpus, the leak rule applied).
- ``teacher``: ``teacher.py`` (fine-tune) or ``teacher_as_is.py`` (a classifier used as it is), both
  built on ``teacher_model.py``; ``teacher_checkpoint.py`` reads a checkpoint without torch.
- ``teacher-export``: ``teacher_export.py`` (ONNX + tokenizer + manifest).
- ``label``: ``labeling.py`` (the teacher's logits), ``label_shards.py`` (the labels folder's books).
- ``vocab``: ``vocab.py`` (top-K 1-4-grams in bounded memory).
- ``features``: ``features.py`` (the corpus as bags of vocabulary rows, memory-mapped).
- ``table-init``: ``table_init.py`` (the table's start from the teacher's n-gram vectors, when asked for).
- ``kd``, ``ft``, ``scratch``: ``distill.py`` (one training loop), ``student.py`` (the DAN),
  ``student_runs.py`` (a run's students), ``holdout.py`` (the router's slice of the corpus).
- ``export``: ``export.py`` (shards + vocabulary + ONNX head + manifest, atomic).
- ``evaluate``: ``evaluate.py``, with ``fasttext_baseline.py``.
- ``cascade``: ``cascade.py`` (the threshold grid), ``router.py`` (the learned router),
  ``cascade_report.py`` (its report).

``training.pipeline`` wires them together; a new step is a module here plus its entry in
``training.pipeline.STEPS``.
"""
