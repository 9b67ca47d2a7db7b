#!/usr/bin/env bash
# `make docker-test`: build the serving image and prove it serves, on this machine.
#
#  0. the compose file: `docker compose config` (or docker-compose) validates it, and the service graph is
#     train -> api (after train completed successfully; healthcheck) -> locust (profile "bench");
#  1. a Docker engine: install docker.io if the CLI is missing; start dockerd (logs in $WORK/dockerd.log)
#     if none answers, and wait for `docker info` with a deadline;
#  2. a local base image built from Debian packages with debootstrap (bookworm, python3.11 from Debian,
#     docs, man pages and translations left out as in Debian's -slim images; about a minute; kept as
#     $BASE_TAG, labelled with its recipe, and rebuilt only when the recipe changes), so no registry is needed;
#  3. the serving image (Dockerfile target `serve`) FROM that base, built with --network host and the
#     host's CA bundle (pip only, never copied into the final image), from a temporary build context;
#  4. a tiny student made by training.quick, mounted read-only; the container runs with host networking on
#     127.0.0.1; /readyz, the HEALTHCHECK and POST /v1/classify are checked; SIGTERM must end it with 0.
#
# The last line is "docker-test: PASSED (...)", with the image size and timings; "docker-test: SKIPPED
# (<reason>)" and exit 0 when no engine can be started; "docker-test: FAILED (<reason>)" and exit 1 when a
# step fails. Every step has a deadline. Environment: BASE_TAG (default sd-base:bookworm), REBUILD_BASE=1,
# DEBIAN_MIRROR, DOCKER_TEST_TRAIN=1 (also build the `train` target, with the local torch CPU wheel),
# KEEP_WORK=1.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$REPO/.venv/bin/python}"
BASE_TAG="${BASE_TAG:-sd-base:bookworm}"
IMAGE="${IMAGE:-sparse-distillation:serve-test}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TORCH_WHEELS="${TORCH_WHEELS:-/opt/wheels}"
HOST_CA="${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}"
BUILD_TIMEOUT_S="${BUILD_TIMEOUT_S:-900}"  # for debootstrap and for each image build
WORK="$(mktemp -d /tmp/sd-docker-test.XXXXXX)"
CONTAINER="sd-docker-test-$$"
STARTED_DOCKERD=""
T0=$SECONDS

# The base image's recipe: a change here (packages, trimming) makes the next run rebuild the base.
BASE_PACKAGES="python3,python3-venv,ca-certificates"
BASE_RECIPE="bookworm minbase $BASE_PACKAGES slim-v1"
# Paths dpkg leaves out, now and in later `apt-get install`s (Debian's -slim images do the same).
DPKG_EXCLUDES='path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*'

log() { printf '[docker-test] %s\n' "$*"; }
skip() { printf 'docker-test: SKIPPED (%s)\n' "$*"; exit 0; }
fail() {
    if docker inspect "$CONTAINER" >/dev/null 2>&1; then docker logs --tail 50 "$CONTAINER" 2>&1 | sed 's/^/  | /'; fi
    printf 'docker-test: FAILED (%s)\n' "$*"
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
trap 'fail "interrupted"' INT TERM

wait_for() {  # wait_for SECONDS COMMAND...: poll a condition until a deadline
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 1  # poll interval
    done
}

apt_install() {  # apt_install PACKAGE...: as root, with fresh package lists (a new machine has none)
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get update -q >>"$WORK/apt.log" 2>&1 || return 1
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q "$@" >>"$WORK/apt.log" 2>&1
}

# --- 0. the compose file (needs no engine) -------------------------------------------------------------
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then COMPOSE=(docker-compose)
else COMPOSE=()
fi
if [ ${#COMPOSE[@]} -gt 0 ]; then
    (cd "$REPO" && "${COMPOSE[@]}" config >"$WORK/compose.yml" 2>"$WORK/compose.err") \
        || { cat "$WORK/compose.err"; fail "${COMPOSE[*]} config: docker-compose.yml does not validate"; }
    "$PY" - "$WORK/compose.yml" <<'PYEOF' || fail "docker-compose.yml: unexpected service graph (above)"
import sys

import yaml

services = yaml.safe_load(open(sys.argv[1]))["services"]
expected = {
    ("api", "train"): "service_completed_successfully",
    ("locust", "api"): "service_healthy",
}
for (service, dependency), condition in expected.items():
    got = services[service].get("depends_on", {}).get(dependency, {}).get("condition")
    if got != condition:
        sys.exit(f"{service} depends on {dependency} with condition {got!r}, expected {condition!r}")
if "healthcheck" not in services["api"]:
    sys.exit("api has no healthcheck")
if services["locust"].get("profiles") != ["bench"] or services["api"].get("profiles"):
    sys.exit("locust must be (only) in profile 'bench', api in none")
PYEOF
    log "compose file: valid (${COMPOSE[*]} config); train -> api (healthcheck) -> locust (profile bench)"
else
    log "compose file: not checked (neither \`docker compose\` nor docker-compose is installed)"
fi

# --- 1. the engine -------------------------------------------------------------------------------------
if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io (apt-get; log: $WORK/apt.log)"
    apt_install docker.io || skip "no docker CLI or dockerd, and docker.io could not be installed"
fi
if ! docker info >/dev/null 2>&1; then
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
export DOCKER_BUILDKIT=0  # the legacy builder: there is no buildx plugin here

# --- 2. the base image (debootstrap) -------------------------------------------------------------------
base_recipe() { docker image inspect -f '{{index .Config.Labels "sd.base.recipe"}}' "$BASE_TAG" 2>/dev/null; }
base_seconds="cached"
old_base_id=""
if [ -n "${REBUILD_BASE:-}" ] || [ "$(base_recipe)" != "$BASE_RECIPE" ]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        apt_install debootstrap || fail "cannot install debootstrap (see $WORK/apt.log)"
    fi
    old_base_id=$(docker image inspect -f '{{.Id}}' "$BASE_TAG" 2>/dev/null || true)
    log "debootstrap bookworm ($BASE_PACKAGES) from $DEBIAN_MIRROR"
    started=$SECONDS
    ROOTFS="$WORK/rootfs"
    timeout "$BUILD_TIMEOUT_S" debootstrap --variant=minbase --include="$BASE_PACKAGES" \
        bookworm "$ROOTFS" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap failed or ran past ${BUILD_TIMEOUT_S} s (log above)"; }
    printf '%s\n' "$DPKG_EXCLUDES" >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-slim"
    find "$ROOTFS/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$ROOTFS/usr/share/man/"* "$ROOTFS/usr/share/info/"* "$ROOTFS/usr/share/locale/"* \
        "$ROOTFS/usr/share/lintian/"* "$ROOTFS/var/cache/apt/"*.bin "$ROOTFS/var/cache/apt/archives/"*.deb \
        "$ROOTFS/var/lib/apt/lists/"*
    tar -C "$ROOTFS" -c . | docker import --change 'CMD ["python3"]' \
        --change "LABEL sd.base.recipe=\"$BASE_RECIPE\"" - "$BASE_TAG" >/dev/null
    rm -rf "$ROOTFS"
    base_seconds="$((SECONDS - started)) s"
    log "base image $BASE_TAG built in $base_seconds: $(($(docker image inspect -f '{{.Size}}' "$BASE_TAG") / 1000000)) MB"
fi
docker run --rm --network none "$BASE_TAG" python3 -c "import sys, venv; assert sys.version_info[:2] == (3, 11), sys.version" \
    || fail "$BASE_TAG has no Python 3.11 with venv"

# --- 3. the serving image ------------------------------------------------------------------------------
CTX="$WORK/context"
mkdir -p "$CTX"
cp -r "$REPO/pyproject.toml" "$REPO/setup.py" "$REPO/README.md" "$REPO/Dockerfile" "$REPO/.dockerignore" \
    "$REPO/sdcore" "$REPO/sdcli" "$REPO/service" "$REPO/training" "$REPO/loadtest" "$REPO/configs" "$CTX/"
# The kernel is built inside the image; a host build (.so, generated .c) must not travel into it.
rm -f "$CTX"/sdcore/*.so "$CTX"/sdcore/_ngram_kernel.c
[ -f "$HOST_CA" ] && cp "$HOST_CA" "$CTX/docker-ca.crt"
log "building $IMAGE (target serve, FROM $BASE_TAG; log: $WORK/build-serve.log)"
old_serve_id=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
started=$SECONDS
timeout "$BUILD_TIMEOUT_S" docker build --network host --build-arg BASE_IMAGE="$BASE_TAG" --target serve \
    -t "$IMAGE" "$CTX" >"$WORK/build-serve.log" 2>&1 \
    || { tail -30 "$WORK/build-serve.log"; fail "serving image build failed or ran past ${BUILD_TIMEOUT_S} s"; }
serve_seconds=$((SECONDS - started))
serve_bytes=$(docker image inspect -f '{{.Size}}' "$IMAGE")
# The images this run replaced (untagged now): removed so that repeated runs do not fill the disk; an old
# base that another image still uses stays.
if [ -n "$old_serve_id" ] && [ "$old_serve_id" != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ]; then
    docker rmi "$old_serve_id" >/dev/null 2>&1 || true
fi
if [ -n "$old_base_id" ]; then docker rmi "$old_base_id" >/dev/null 2>&1 || true; fi
serve_mb=$((serve_bytes / 1000000))
log "serving image built in $serve_seconds s: $serve_mb MB ($serve_bytes bytes, docker image inspect .Size)"
if docker run --rm --network none --entrypoint python3 "$IMAGE" -c "import torch" >/dev/null 2>&1; then
    fail "torch is importable in the serving image"
fi
[ "$(docker run --rm --network none --entrypoint id "$IMAGE" -u)" != 0 ] || fail "the serving image runs as root"
if [ -n "${DOCKER_TEST_TRAIN:-}" ]; then
    mkdir -p "$CTX/docker-wheels"
    cp "$TORCH_WHEELS"/torch-2.13.0+cpu-*.whl "$CTX/docker-wheels/" || fail "no torch CPU wheel in $TORCH_WHEELS"
    log "building the train target (torch from the local CPU wheel)"
    started=$SECONDS
    timeout "$BUILD_TIMEOUT_S" docker build --network host --build-arg BASE_IMAGE="$BASE_TAG" --target train \
        -t sparse-distillation:train-test "$CTX" >"$WORK/build-train.log" 2>&1 \
        || { tail -30 "$WORK/build-train.log"; fail "train image build failed or ran past ${BUILD_TIMEOUT_S} s"; }
    size=$(docker image inspect -f '{{.Size}}' sparse-distillation:train-test)
    log "train image built in $((SECONDS - started)) s: $((size / 1000000)) MB"
fi

# --- 4. run it on a tiny model -------------------------------------------------------------------------
log "making a tiny student (training.quick)"
mkdir -p "$WORK/models"
(cd "$REPO" && timeout 300 "$PY" - "$WORK/models/tiny" >"$WORK/tiny.log" 2>&1 <<'PYEOF'
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
    -e SD_PORT="$PORT" -e SD_HOST=127.0.0.1 -e SD_STUDENT=/models/tiny -e SD_TEACHER= "$IMAGE" >/dev/null || fail "docker run failed"
started=$SECONDS
wait_for 90 curl -fsS "http://127.0.0.1:$PORT/readyz" || fail "/readyz did not answer 200 within 90 s"
log "/readyz after $((SECONDS - started)) s: $(curl -fsS "http://127.0.0.1:$PORT/readyz")"
answer=$(curl -fsS --max-time 10 -X POST "http://127.0.0.1:$PORT/v1/classify" -H 'content-type: application/json' \
    -d '{"texts": ["a gripping, beautifully acted film", "dull and far too long"]}') || fail "/v1/classify failed"
echo "$answer" | "$PY" -c "
import json, sys
body = json.load(sys.stdin)
ok = len(body['results']) == 2 and all(r['label'] in ('negative', 'positive') for r in body['results'])
sys.exit(0 if ok else 1)
" || fail "unexpected /v1/classify answer: $answer"
log "/v1/classify: $answer"
health() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$CONTAINER")" = healthy ]; }
wait_for 60 health || fail "HEALTHCHECK never reported healthy"
log "HEALTHCHECK: healthy"
started=$SECONDS
docker stop -t 30 "$CONTAINER" >/dev/null || fail "docker stop failed"  # SIGTERM, then SIGKILL (exit 137) after 30 s
code=$(docker inspect -f '{{.State.ExitCode}}' "$CONTAINER")
[ "$code" = 0 ] || fail "the container exited with $code on SIGTERM"
log "SIGTERM: exited 0 after $((SECONDS - started)) s"
echo "docker-test: PASSED (serving image $IMAGE: $serve_mb MB, built in $serve_seconds s; base $BASE_TAG:" \
    "$base_seconds; total $((SECONDS - T0)) s)"
