"""``python -m training``: the pipeline's commands (``training.cli``) without the rest of ``sd``."""

from training.cli import main

if __name__ == "__main__":
    main()
