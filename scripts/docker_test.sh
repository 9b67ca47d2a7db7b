#!/usr/bin/env bash
# `make docker-test`: build the serving image and prove it serves, on this machine.
#
#  1. a Docker engine: install docker.io if the CLI is missing; start dockerd (logs in $WORK/dockerd.log)
#     if none answers, and wait for `docker info` with a deadline;
#  2. a local base image built from Debian packages with debootstrap (bookworm, python3.11 from Debian;
#     about a minute; kept as $BASE_TAG for later runs), so no registry is needed;
#  3. the serving image (Dockerfile target `serve`) FROM that base, built with --network host and the
#     host's CA bundle (pip only, never copied into the final image), from a temporary build context;
#  4. a tiny student made by training.quick, mounted read-only; the container runs with host networking;
#     /readyz, the HEALTHCHECK and POST /v1/classify are checked with curl; SIGTERM must end it with 0.
#
# Prints "SKIPPED: <reason>" and exits 0 when no engine can be started; "FAILED: <reason>" and 1 when a
# check fails. Environment: BASE_TAG (default sd-base:bookworm), REBUILD_BASE=1, DEBIAN_MIRROR,
# DOCKER_TEST_TRAIN=1 (also build the `train` target, with the local torch CPU wheel), KEEP_WORK=1.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$REPO/.venv/bin/python}"
BASE_TAG="${BASE_TAG:-sd-base:bookworm}"
IMAGE="${IMAGE:-sparse-distillation:serve-test}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TORCH_WHEELS="${TORCH_WHEELS:-/opt/wheels}"
HOST_CA="${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}"
WORK="$(mktemp -d /tmp/sd-docker-test.XXXXXX)"
CONTAINER="sd-docker-test-$$"
STARTED_DOCKERD=""

log() { printf '[docker-test] %s\n' "$*"; }
skip() { printf 'SKIPPED: %s\n' "$*"; exit 0; }
fail() {
    printf 'FAILED: %s\n' "$*"
    if docker inspect "$CONTAINER" >/dev/null 2>&1; then docker logs --tail 50 "$CONTAINER" 2>&1 | sed 's/^/  | /'; fi
    exit 1
}

cleanup() {
    docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
    if [ -n "$STARTED_DOCKERD" ]; then
        kill "$STARTED_DOCKERD" 2>/dev/null || true  # the dockerd this script started, by its pid
        wait "$STARTED_DOCKERD" 2>/dev/null || true
    fi
    if [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK"; else log "work folder kept: $WORK"; fi
}
trap cleanup EXIT

wait_for() {  # wait_for SECONDS COMMAND...: poll a condition until a deadline
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 1  # poll interval
    done
}

# --- 1. the engine -------------------------------------------------------------------------------------
if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing docker.io (apt-get)"
        apt-get install -y -q docker.io >"$WORK/apt.log" 2>&1 || skip "apt-get install docker.io failed (see $WORK/apt.log)"
    else
        skip "no docker CLI or dockerd, and no root apt-get to install docker.io"
    fi
fi
if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null 2>&1 || skip "no dockerd binary to start"
    [ "$(id -u)" = 0 ] || skip "no running Docker engine and not root to start dockerd"
    log "starting dockerd (log: $WORK/dockerd.log)"
    dockerd >"$WORK/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    if ! wait_for 60 docker info; then
        tail -5 "$WORK/dockerd.log" 2>/dev/null | sed 's/^/  | /' || true
        skip "dockerd did not answer within 60 s (this machine may not allow containers)"
    fi
fi
log "engine: Docker $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')"
export DOCKER_BUILDKIT=0  # the legacy builder: docker.io 20.10 has no buildx plugin here

# --- 2. the base image (debootstrap) -------------------------------------------------------------------
if [ -n "${REBUILD_BASE:-}" ] || ! docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        apt-get install -y -q debootstrap >"$WORK/apt-debootstrap.log" 2>&1 || fail "cannot install debootstrap"
    fi
    log "debootstrap bookworm (python3, python3-venv, ca-certificates) from $DEBIAN_MIRROR"
    started=$SECONDS
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$WORK/rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap failed (log above)"; }
    rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
    tar -C "$WORK/rootfs" -c . | docker import --change 'CMD ["python3"]' - "$BASE_TAG" >/dev/null
    rm -rf "$WORK/rootfs"
    log "base image $BASE_TAG built in $((SECONDS - started)) s"
fi
docker run --rm "$BASE_TAG" python3 -c "import sys, venv; assert sys.version_info[:2] == (3, 11), sys.version" \
    || fail "$BASE_TAG has no Python 3.11 with venv"

# --- 3. the serving image ------------------------------------------------------------------------------
CTX="$WORK/context"
mkdir -p "$CTX"
cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/Dockerfile" "$REPO/.dockerignore" \
    "$REPO/service" "$REPO/training" "$REPO/loadtest" "$REPO/configs" "$CTX/"
[ -f "$HOST_CA" ] && cp "$HOST_CA" "$CTX/docker-ca.crt"
log "building $IMAGE (target serve, FROM $BASE_TAG)"
started=$SECONDS
docker build --network host --build-arg BASE_IMAGE="$BASE_TAG" --target serve -t "$IMAGE" "$CTX" \
    >"$WORK/build-serve.log" 2>&1 || { tail -30 "$WORK/build-serve.log"; fail "serving image build failed"; }
serve_size=$(docker image inspect -f "{{.Size}}" "$IMAGE")
log "serving image built in $((SECONDS - started)) s: $((serve_size / 1024 / 1024)) MiB"
if docker run --rm --entrypoint python3 "$IMAGE" -c "import torch" >/dev/null 2>&1; then
    fail "torch is importable in the serving image"
fi
[ "$(docker run --rm --entrypoint id "$IMAGE" -u)" != 0 ] || fail "the serving image runs as root"
if [ -n "${DOCKER_TEST_TRAIN:-}" ]; then
    mkdir -p "$CTX/docker-wheels"
    cp "$TORCH_WHEELS"/torch-2.13.0+cpu-*.whl "$CTX/docker-wheels/" || fail "no torch CPU wheel in $TORCH_WHEELS"
    log "building the train target (torch from the local CPU wheel)"
    started=$SECONDS
    docker build --network host --build-arg BASE_IMAGE="$BASE_TAG" --target train -t sparse-distillation:train-test \
        "$CTX" >"$WORK/build-train.log" 2>&1 || { tail -30 "$WORK/build-train.log"; fail "train image build failed"; }
    size=$(docker image inspect -f '{{.Size}}' sparse-distillation:train-test)
    log "train image built in $((SECONDS - started)) s: $((size / 1024 / 1024)) MiB"
fi

# --- 4. run it on a tiny model -------------------------------------------------------------------------
log "making a tiny student (training.quick)"
mkdir -p "$WORK/models"
(cd "$REPO" && "$PY" - "$WORK/models/tiny" >"$WORK/tiny.log" 2>&1 <<'PYEOF'
import sys
from pathlib import Path

from training.data import load_mr
from training.quick import make_tiny_student

task = load_mr(Path(".cache/data"))
make_tiny_student(Path(sys.argv[1]), task.train.texts[:400], task.train.labels[:400], task.label_names, epochs=2)
PYEOF
) || { tail -20 "$WORK/tiny.log"; fail "could not make the tiny student"; }
chmod -R a+rX "$WORK/models"  # exports are private (0700) folders; the container user is uid 10001
PORT=$("$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
docker run -d --name "$CONTAINER" --network host -v "$WORK/models:/models:ro" \
    -e SD_PORT="$PORT" -e SD_HOST=127.0.0.1 -e SD_STUDENT=/models/tiny -e SD_TEACHER= "$IMAGE" >/dev/null
wait_for 90 curl -fsS "http://127.0.0.1:$PORT/readyz" || fail "/readyz did not answer 200 within 90 s"
log "/readyz: $(curl -fsS "http://127.0.0.1:$PORT/readyz")"
answer=$(curl -fsS -X POST "http://127.0.0.1:$PORT/v1/classify" -H 'content-type: application/json' \
    -d '{"texts": ["a gripping, beautifully acted film", "dull and far too long"]}') || fail "/v1/classify failed"
echo "$answer" | "$PY" -c "
import json, sys
body = json.load(sys.stdin)
assert len(body['results']) == 2 and all(r['label'] in ('negative', 'positive') for r in body['results']), body
" || fail "unexpected /v1/classify answer: $answer"
log "/v1/classify: $answer"
health() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$CONTAINER")" = healthy ]; }
wait_for 60 health || fail "HEALTHCHECK never reported healthy"
log "HEALTHCHECK: healthy"
docker stop -t 30 "$CONTAINER" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$CONTAINER")
[ "$code" = 0 ] || fail "the container exited with $code on SIGTERM"
log "stopped cleanly (exit 0)"
echo "PASSED: serving image $IMAGE ($((serve_size / 1024 / 1024)) MiB), base $BASE_TAG"
