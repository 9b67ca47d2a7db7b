"""Where the pipeline's texts and weights come from, before any step runs.

- ``tasks.py``: the built-in tasks (mr, rt, trec, sms-spam, imdb) and their transfer-corpus recipes; the
  leak rule's normalization. A new built-in task is an entry in ``tasks.TASKS``.
- ``task_data.py``: labeled sets and the data stage's files: types, the MR corpora, users' own files.
- ``sources.py``: named files out of one pinned package-registry distribution, sha256-checked.
- ``teacher_bases.py``: teacher base checkpoints by name (MiniLM-L6, MPNet-base). A new named teacher
  base goes here.
"""
