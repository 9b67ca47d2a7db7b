"""Which models a process serves: ``registry.py`` (each loaded model behind its batcher, found by kind and
name), ``layout.py`` (the repository's folders on disk) and ``model_repository.py`` (load and unload at run
time, Triton's repository extension)."""
