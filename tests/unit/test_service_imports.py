"""The service and the shared core never import torch, transformers, scikit-learn or training code
(DESIGN.md section 2; the cascade router's coefficients are applied with numpy), the service not scipy
either (the serving image leaves it out), and they build nothing at
import time (STYLE.md 2): checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
import service.__main__, service.app
from service.app import create_app
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] in ("torch", "transformers", "training", "sklearn", "scipy"))
print(heavy)
"""

CORE_PROBE = """
import pkgutil, importlib, sys
import sdcore
for info in pkgutil.iter_modules(sdcore.__path__):
    importlib.import_module(f"sdcore.{info.name}")
print(sorted(m for m in sys.modules
             if m.split(".")[0] in ("torch", "transformers", "onnx", "onnxruntime", "training", "service",
                                    "sklearn")))
"""


def test_the_service_imports_no_torch_and_no_training_code() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_shared_core_imports_neither_side_nor_torch_nor_onnxruntime() -> None:
    out = subprocess.run([sys.executable, "-c", CORE_PROBE], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
