"""What a user would pick instead of the sparse student, trained and scored on a run's own data (issue 20).

Every peer sees the run's own splits, its transfer corpus and its teacher's labels (the teacher's argmax
over the corpus, plus the gold training set), is seeded, and trains in a process of its own:

- ``fasttext_kd``: fastText on the teacher's labels, word n-grams up to 4 and character n-grams, tuned on
  dev, with its quantized ``.ftz`` (``fasttext_kd_ftz``); in the project's own environment.
- ``model2vec`` / ``model2vec_kd``: Model2Vec static embeddings distilled from the teacher's base encoder,
  then its classifier fitted on the gold training set / on the teacher's labels.
- ``setfit``: SetFit on the teacher's base encoder, trained on the gold training set.

Model2Vec and SetFit need ``transformers<5.4``, which the project does not pin, so they run in an
isolated environment of their own (``make peers-env``: ``.venv-peers``), through ``isolated.py``, which
imports nothing of the project. The files between the study and a peer process:

- ``inputs.py`` writes ``runs/<run>/peers/input.json`` from the run folder (texts, labels, base folder);
- each peer writes ``runs/<run>/peers/<peer>/result.json`` (dev and test predictions, training seconds,
  model bytes, settings, versions) and its model, atomically; a peer already done for the same input
  digest is not trained again;
- ``study.py`` scores them (95% intervals) and writes ``reports/peers-<run>.{md,json}``.
"""
