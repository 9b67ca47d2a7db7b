"""Builds the compiled n-gram kernel (sdcore/_ngram_kernel.pyx); everything else is in pyproject.toml.

    pip install -e .                           # builds it as part of the install
    python setup.py build_ext --inplace        # rebuilds it in the source tree after a .pyx change

No ``-march=native``: the extension must run on any x86-64 (or other) CPU it is moved to. Its vector
forms (F16C, AVX2) are compiled per function and picked at run time (sdcore/_kernel_simd.h).
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "sdcore._ngram_kernel",
        sources=["sdcore/_ngram_kernel.pyx"],
        depends=["sdcore/_kernel_simd.h"],
        include_dirs=["sdcore"],
        extra_compile_args=["-O3", "-fno-strict-aliasing"],
        extra_link_args=["-pthread"],
    )
]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}))
