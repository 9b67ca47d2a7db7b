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
#  4. a tiny student made by training.testing.quick, mounted read-only; the container runs with host networking on
#     127.0.0.1; /readyz, the HEALTHCHECK and POST /v1/classify are checked; SIGTERM must end it with 0.
#
# The last line is "docker-test: PASSED (...)", with the image size and timings; "docker-test: SKIPPED
# (<reason>)" and exit 0 when no engine can be started; "docker-test: FAILED (<reason>)" and exit 1 when a
# step fails. Every step has a deadline. Environment: BASE_TAG (default sd-base:bookworm), REBUILD_BASE=1,
# DEBIAN_MIRROR, DOCKER_TEST_TRAIN=1 (also build the `train` target, with the local torch CPU wheel),
# KEEP_WORK=1.
set -euo pipefail

NAME=docker-test
# shellcheck source=scripts/docker_lib.sh
source "$(dirname "$0")/docker_lib.sh"
IMAGE="${IMAGE:-sparse-distillation:serve-test}"
CONTAINER="sd-docker-test-$$"

on_fail() {
    if docker inspect "$CONTAINER" >/dev/null 2>&1; then docker logs --tail 50 "$CONTAINER" 2>&1 | sed 's/^/  | /'; fi
}
on_exit() { docker rm -f "$CONTAINER" >/dev/null 2>&1 || true; }

# --- 0. the compose file (needs no engine) -------------------------------------------------------------
find_compose
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
ensure_engine

# --- 2. the base image (debootstrap) -------------------------------------------------------------------
ensure_base
base_seconds=$BASE_SECONDS

# --- 3. the serving image ------------------------------------------------------------------------------
CTX="$WORK/context"
make_context "$CTX"
log "building $IMAGE (target serve, FROM $BASE_TAG; log: $WORK/build-serve.log)"
old_serve_id=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
started=$SECONDS
timeout "$BUILD_TIMEOUT_S" docker build --network host --build-arg BASE_IMAGE="$BASE_TAG" --target serve \
    -t "$IMAGE" "$CTX" >"$WORK/build-serve.log" 2>&1 \
    || { tail -30 "$WORK/build-serve.log"; fail "serving image build failed or ran past ${BUILD_TIMEOUT_S} s"; }
serve_seconds=$((SECONDS - started))
serve_bytes=$(docker image inspect -f '{{.Size}}' "$IMAGE")
# The image this run replaced (untagged now): removed so that repeated runs do not fill the disk.
if [ -n "$old_serve_id" ] && [ "$old_serve_id" != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ]; then
    docker rmi "$old_serve_id" >/dev/null 2>&1 || true
fi
serve_mb=$((serve_bytes / 1000000))
log "serving image built in $serve_seconds s: $serve_mb MB ($serve_bytes bytes, docker image inspect .Size)"
if docker run --rm --network none --entrypoint python3 "$IMAGE" -c "import torch" >/dev/null 2>&1; then
    fail "torch is importable in the serving image"
fi
[ "$(docker run --rm --network none --entrypoint id "$IMAGE" -u)" != 0 ] || fail "the serving image runs as root"
if [ -n "${DOCKER_TEST_TRAIN:-}" ]; then
    make_context "$CTX" torch
    log "building the train target (torch from the local CPU wheel)"
    started=$SECONDS
    timeout "$BUILD_TIMEOUT_S" docker build --network host --build-arg BASE_IMAGE="$BASE_TAG" --target train \
        -t sparse-distillation:train-test "$CTX" >"$WORK/build-train.log" 2>&1 \
        || { tail -30 "$WORK/build-train.log"; fail "train image build failed or ran past ${BUILD_TIMEOUT_S} s"; }
    size=$(docker image inspect -f '{{.Size}}' sparse-distillation:train-test)
    log "train image built in $((SECONDS - started)) s: $((size / 1000000)) MB"
fi

# --- 4. run it on a tiny model -------------------------------------------------------------------------
log "making a tiny student (training.testing.quick)"
mkdir -p "$WORK/models"
(cd "$REPO" && timeout 300 "$PY" - "$WORK/models/tiny" >"$WORK/tiny.log" 2>&1 <<'PYEOF'
import sys
from pathlib import Path

from training.data.task_data import load_mr
from training.testing.quick import make_tiny_student

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
