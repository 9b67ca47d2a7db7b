#!/usr/bin/env bash
# `make compose-test`: the real docker-compose.yml, the whole chain, on this machine.
#
#  1. the compose command (`docker compose`, else docker-compose; Debian's docker-compose is installed
#     when neither is there), the engine and the local debootstrap base (scripts/docker_lib.sh);
#  2. `compose build`: the train, serve and loadtest targets FROM that base, in a build context that holds
#     the host's CA bundle and torch's local CPU wheel (pip gets torch from the disk, nothing else is
#     downloaded from PyTorch's index);
#  3. `compose up -d api`: train runs configs/compose-tiny.toml (MR from the host's data cache, mounted;
#     the MiniLM teacher shipped in the image) and exits 0; only then api starts, with the model volume
#     read-only, and must turn healthy (its HEALTHCHECK on /readyz);
#  4. POST /v1/classify and /v1/compare answer with the trained student and teacher; the api container
#     runs as it should (read-only root, non-root, no capabilities, no-new-privileges, CPU and memory
#     limits, its volume read-only: writes there fail);
#  5. the bench profile: locust headless for BENCH_DURATION, exit 0, its CSV and HTML read from the
#     reports volume (requests > 0, failures 0);
#  6. `compose stop api` while slow uploads are in flight (scripts/drain_probe.py): readiness 503 first,
#     new connections still served during the drain delay, every upload answered 200, the container
#     exits 0 within its grace period;
#  7. `compose down -v`: no container, volume or network of the project is left.
#
# All traffic stays on loopback (scripts/compose-test.yml: host networking, 127.0.0.1). The last line is
# "compose-test: PASSED (...)" with timings and image sizes; SKIPPED (exit 0) when no engine can be
# started; FAILED (exit 1) otherwise. Environment: scripts/docker_lib.sh's, BENCH_DURATION (default 10s),
# COMPOSE_TEST_PROJECT (default sd-compose-test).
set -euo pipefail

NAME=compose-test
# shellcheck source=scripts/docker_lib.sh
source "$(dirname "$0")/docker_lib.sh"
PROJECT="${COMPOSE_TEST_PROJECT:-sd-compose-test}"
BENCH_DURATION="${BENCH_DURATION:-10s}"
DATA="$REPO/.cache/data"
COMPOSE=()

# The compose file the test runs: docker-compose.yml with scripts/compose-test.yml merged in by compose
# itself (`config`), less the api's published port, which host networking refuses (compose 1.29 cannot
# remove a list entry in an override file).
COMPOSE_FILE_RUN="$WORK/compose.yml"
dc() { "${COMPOSE[@]}" -p "$PROJECT" --project-directory "$REPO" -f "$COMPOSE_FILE_RUN" --profile bench "$@"; }

on_fail() {
    if [ ${#COMPOSE[@]} -gt 0 ]; then dc logs --no-color --tail 40 2>&1 | sed 's/^/  | /' || true; fi
}
on_exit() {  # whatever happened: leave nothing of the project behind
    if [ ${#COMPOSE[@]} -gt 0 ]; then dc down -v --remove-orphans >/dev/null 2>&1 || true; fi
}
leftovers() {  # containers, volumes and networks still labelled with the project
    {
        docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"
        docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT"
        docker network ls -q --filter "label=com.docker.compose.project=$PROJECT"
    } | wc -l
}

# --- 1. compose, engine, base --------------------------------------------------------------------------
ensure_engine
find_compose
if [ ${#COMPOSE[@]} -eq 0 ]; then
    log "installing docker-compose (Debian's package; log: $WORK/apt.log)"
    apt_install docker-compose || skip "neither \`docker compose\` nor docker-compose, and docker-compose could not be installed"
    find_compose
fi
log "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || "${COMPOSE[@]}" version | head -1))"
[ -f "$DATA/mr/checksums.json" ] || fail "no MR data in $DATA: run \`make data\` first"
ensure_base

# --- 2. build the three images -------------------------------------------------------------------------
CTX="$WORK/context"
make_context "$CTX" torch
export BUILD_CONTEXT="$CTX" BUILD_NETWORK=host BASE_IMAGE="$BASE_TAG"
export CONFIG=configs/compose-tiny.toml MODEL=compose-tiny DATA_CACHE
DATA_CACHE="$(readlink -f "$DATA")"
PORT=$("$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
export PORT API_URL="http://127.0.0.1:$PORT" USERS=4 DURATION="$BENCH_DURATION" DRAIN_DELAY_S=3 \
    GRACEFUL_TIMEOUT_S=30 STOP_GRACE_PERIOD=40s
"${COMPOSE[@]}" -p "$PROJECT" -f "$REPO/docker-compose.yml" -f "$REPO/scripts/compose-test.yml" config \
    >"$WORK/compose.merged.yml" || fail "compose config: docker-compose.yml + scripts/compose-test.yml do not validate"
"$PY" - "$WORK/compose.merged.yml" "$COMPOSE_FILE_RUN" <<'PYEOF' || fail "cannot write $COMPOSE_FILE_RUN"
import sys

import yaml

config = yaml.safe_load(open(sys.argv[1]))
for service in config["services"].values():
    if service.get("network_mode") == "host":
        service.pop("ports", None)
yaml.safe_dump(config, open(sys.argv[2], "w"), sort_keys=False)
PYEOF
dc down -v --remove-orphans >/dev/null 2>&1 || true  # a previous run that was killed
declare -A old_ids
for target in train serve loadtest; do
    old_ids[$target]=$(docker image inspect -f '{{.Id}}' "sparse-distillation:$target" 2>/dev/null || true)
done
log "building train, api (serve) and locust (loadtest) FROM $BASE_TAG (log: $WORK/build.log)"
started=$SECONDS
timeout "$((3 * BUILD_TIMEOUT_S))" "${COMPOSE[@]}" -p "$PROJECT" --project-directory "$REPO" \
    -f "$COMPOSE_FILE_RUN" --profile bench build >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log"; fail "compose build failed or ran past $((3 * BUILD_TIMEOUT_S)) s"; }
build_seconds=$((SECONDS - started))
for target in train serve loadtest; do  # the images this build replaced: removed, so disks do not fill
    new_id=$(docker image inspect -f '{{.Id}}' "sparse-distillation:$target")
    if [ -n "${old_ids[$target]}" ] && [ "${old_ids[$target]}" != "$new_id" ]; then
        docker rmi "${old_ids[$target]}" >/dev/null 2>&1 || true
    fi
done
sizes="train $(image_mb sparse-distillation:train) MB, serve $(image_mb sparse-distillation:serve) MB, loadtest $(image_mb sparse-distillation:loadtest) MB"
log "built in $build_seconds s: $sizes"
if docker run --rm --network none --entrypoint python3 sparse-distillation:serve -c "import torch" >/dev/null 2>&1; then
    fail "torch is importable in the serving image"
fi

# --- 3. train, then api --------------------------------------------------------------------------------
log "compose up -d api: train runs $CONFIG first (log: $WORK/up.log)"
started=$SECONDS
timeout 1800 "${COMPOSE[@]}" -p "$PROJECT" --project-directory "$REPO" -f "$COMPOSE_FILE_RUN" \
    up -d --no-build api >"$WORK/up.log" 2>&1 || { tail -20 "$WORK/up.log"; fail "compose up api failed"; }
train_id=$(dc ps -a -q train)
[ -n "$train_id" ] || fail "no train container"
[ "$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$train_id")" = "exited 0" ] \
    || fail "train did not exit 0: $(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$train_id")"
train_seconds=$((SECONDS - started))
log "train exited 0 after $train_seconds s; last lines: $(docker logs "$train_id" 2>&1 | tail -1)"
api_id=$(dc ps -q api)
[ -n "$api_id" ] || fail "api was not started after train"
api_started=$(docker inspect -f '{{.State.StartedAt}}' "$api_id")
train_finished=$(docker inspect -f '{{.State.FinishedAt}}' "$train_id")
[[ "$api_started" > "$train_finished" ]] || fail "api started ($api_started) before train finished ($train_finished)"
health() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$api_id")" = healthy ]; }
started=$SECONDS
wait_for 240 health || fail "api never turned healthy"
log "api healthy $((SECONDS - started)) s after compose up returned (HEALTHCHECK: python3 -m service.ops.healthcheck)"

# --- 4. the routes and the container's settings --------------------------------------------------------
URL="http://127.0.0.1:$PORT"
classify=$(curl -fsS --max-time 20 -X POST "$URL/v1/classify" -H 'content-type: application/json' \
    -d '{"texts": ["a gripping, beautifully acted film", "dull and far too long"]}') || fail "/v1/classify failed"
compare=$(curl -fsS --max-time 60 -X POST "$URL/v1/compare" -H 'content-type: application/json' \
    -d '{"texts": ["a gripping, beautifully acted film", "dull and far too long"]}') || fail "/v1/compare failed"
"$PY" - "$classify" "$compare" <<'PYEOF' || fail "unexpected answers (above)"
import json
import sys

classify, compare = json.loads(sys.argv[1]), json.loads(sys.argv[2])
labels = {"negative", "positive"}
assert classify["model"] == "compose-tiny", classify
assert [r["label"] in labels for r in classify["results"]] == [True, True], classify
assert all(abs(sum(r["scores"].values()) - 1) < 1e-3 and 0 <= r["coverage"] <= 1 for r in classify["results"])
assert (compare["student_model"], compare["teacher_model"]) == ("compose-tiny", "compose-tiny-teacher"), compare
assert len(compare["results"]) == 2, compare
for item in compare["results"]:
    assert item["student"]["label"] in labels and item["teacher"]["label"] in labels
    assert item["agree"] == (item["student"]["label"] == item["teacher"]["label"])
assert 0 <= compare["agreement_rate"] <= 1 and compare["latency_ms"]["teacher"] > 0
print("  classify:", [(r["label"], round(r["score"], 3)) for r in classify["results"]])
print("  compare: student", [i["student"]["label"] for i in compare["results"]], "teacher",
      [i["teacher"]["label"] for i in compare["results"]], "agreement", compare["agreement_rate"])
PYEOF
log "/v1/classify and /v1/compare answered (student compose-tiny, teacher compose-tiny-teacher)"
settings=$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}} {{.Config.User}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{range .Mounts}}{{if eq .Destination "/models"}}models-rw={{.RW}}{{end}}{{end}}' "$api_id")
[ "$settings" = "true 10001:10001 [ALL] [no-new-privileges:true] 2000000000 2147483648 models-rw=false" ] \
    || fail "api container settings: $settings"
[ "$(docker exec "$api_id" id -u)" = 10001 ] || fail "api runs as root"
if docker exec "$api_id" sh -c 'echo x >/app/x' 2>/dev/null; then fail "the api's root filesystem is writable"; fi
if docker exec "$api_id" sh -c 'echo x >/models/x' 2>/dev/null; then fail "the model volume is writable in api"; fi
docker exec "$api_id" sh -c 'echo x >/tmp/x' || fail "the api's /tmp tmpfs is not writable"
log "api: read-only root, /models read-only, uid 10001, cap_drop ALL, no-new-privileges, 2 CPUs, 2 GiB"

# --- 5. the bench profile ------------------------------------------------------------------------------
# --no-deps: api is up and healthy already; without it compose 1.29 would run train again first.
log "bench profile: locust headless, $USERS users for $BENCH_DURATION"
started=$SECONDS
timeout 120 "${COMPOSE[@]}" -p "$PROJECT" --project-directory "$REPO" -f "$COMPOSE_FILE_RUN" \
    --profile bench up -d --no-build --no-deps locust >"$WORK/locust-up.log" 2>&1 \
    || { tail -20 "$WORK/locust-up.log"; fail "compose up locust failed"; }
locust_id=$(dc ps -a -q locust)
code=$(timeout 180 docker wait "$locust_id") || fail "locust did not finish within 180 s"
[ "$code" = 0 ] || { docker logs --tail 30 "$locust_id"; fail "locust exited $code"; }
reports_volume="${PROJECT//[^a-zA-Z0-9_-]/}_reports"
docker run --rm --network none -v "$reports_volume:/reports:ro" --entrypoint sh sparse-distillation:loadtest \
    -c 'cat /reports/locust_stats.csv; echo "html_bytes=$(wc -c </reports/locust.html)"' >"$WORK/locust.out" \
    || fail "no locust report in the reports volume"
"$PY" - "$WORK/locust.out" <<'PYEOF' || fail "unexpected locust report (above)"
import csv
import io
import sys

text = open(sys.argv[1]).read()
stats, _, html = text.rpartition("html_bytes=")
rows = {row["Name"]: row for row in csv.DictReader(io.StringIO(stats))}
total = rows["Aggregated"]
requests, failures = int(total["Request Count"]), int(total["Failure Count"])
print(f"  locust: {requests} requests, {failures} failures, {float(total['Requests/s']):.0f} req/s, "
      f"median {total['Median Response Time']} ms, report.html {int(html)} bytes")
sys.exit(0 if requests > 0 and failures == 0 and int(html) > 1000 else 1)
PYEOF
log "bench: locust exited 0 after $((SECONDS - started)) s; CSV and HTML read from volume $reports_volume"

# --- 6. stop with requests in flight -------------------------------------------------------------------
log "compose stop api with 4 slow uploads in flight (drain delay $DRAIN_DELAY_S s, grace $STOP_GRACE_PERIOD)"
"$PY" "$REPO/scripts/drain_probe.py" --url "$URL" --max-stop-s 40 -- \
    "${COMPOSE[@]}" -p "$PROJECT" --project-directory "$REPO" -f "$COMPOSE_FILE_RUN" stop api \
    >"$WORK/drain.json" 2>"$WORK/drain.err" || { cat "$WORK/drain.json" "$WORK/drain.err"; fail "the drain check failed"; }
drain=$(tail -1 "$WORK/drain.json")
[ "$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$api_id")" = "exited 0" ] \
    || fail "api did not exit 0 on stop: $(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$api_id")"
log "stop: $drain"

# --- 7. down -v ----------------------------------------------------------------------------------------
dc down -v --remove-orphans >"$WORK/down.log" 2>&1 || { cat "$WORK/down.log"; fail "compose down -v failed"; }
left=$(leftovers)
[ "$left" = 0 ] || fail "compose down -v left $left containers, volumes or networks of $PROJECT"
log "down -v: no container, volume or network of $PROJECT left"
echo "compose-test: PASSED (${COMPOSE[*]}; build $build_seconds s; train + api start $train_seconds s;" \
    "$sizes; base $BASE_TAG: $BASE_SECONDS; total $((SECONDS - T0)) s)"
