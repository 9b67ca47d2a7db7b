# Shared by scripts/docker_test.sh and scripts/compose_test.sh (sourced, not run): the Docker engine, the
# local debootstrap base image, the build context. The caller sets NAME (the prefix of every line) before
# sourcing, and may define on_fail (run before a FAILED line) and on_exit (run by the EXIT trap).
#
# Environment: BASE_TAG (default sd-base:bookworm), REBUILD_BASE=1, DEBIAN_MIRROR, HOST_CA, TORCH_WHEELS,
# BUILD_TIMEOUT_S, KEEP_WORK=1.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$REPO/.venv/bin/python}"
BASE_TAG="${BASE_TAG:-sd-base:bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TORCH_WHEELS="${TORCH_WHEELS:-/opt/wheels}"
HOST_CA="${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}"
BUILD_TIMEOUT_S="${BUILD_TIMEOUT_S:-900}"  # for debootstrap and for each image build
WORK="$(mktemp -d "/tmp/sd-$NAME.XXXXXX")"
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

log() { printf '[%s] %s\n' "$NAME" "$*"; }
skip() { printf '%s: SKIPPED (%s)\n' "$NAME" "$*"; exit 0; }
fail() {
    if declare -F on_fail >/dev/null; then on_fail || true; fi
    printf '%s: FAILED (%s)\n' "$NAME" "$*"
    exit 1
}

_docker_lib_cleanup() {
    if declare -F on_exit >/dev/null; then on_exit || true; fi
    if [ -n "$STARTED_DOCKERD" ]; then
        kill "$STARTED_DOCKERD" 2>/dev/null || true  # the dockerd this script started, by its pid
        wait "$STARTED_DOCKERD" 2>/dev/null || true
    fi
    if [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK"; else log "work folder kept: $WORK"; fi
}
trap _docker_lib_cleanup EXIT
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

find_compose() {  # sets COMPOSE to the compose command here: the plugin, else docker-compose, else empty
    if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then COMPOSE=(docker-compose)
    else COMPOSE=()
    fi
}

ensure_engine() {  # the docker CLI and a running engine (installs docker.io, starts dockerd), or SKIPPED
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
    export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0  # the legacy builder: there is no buildx plugin here
}

# The base image (debootstrap): BASE_SECONDS is "cached" or how long it took.
ensure_base() {
    local base_recipe old_base_id="" started rootfs
    base_recipe=$(docker image inspect -f '{{index .Config.Labels "sd.base.recipe"}}' "$BASE_TAG" 2>/dev/null || true)
    BASE_SECONDS="cached"
    if [ -n "${REBUILD_BASE:-}" ] || [ "$base_recipe" != "$BASE_RECIPE" ]; then
        if ! command -v debootstrap >/dev/null 2>&1; then
            apt_install debootstrap || fail "cannot install debootstrap (see $WORK/apt.log)"
        fi
        old_base_id=$(docker image inspect -f '{{.Id}}' "$BASE_TAG" 2>/dev/null || true)
        log "debootstrap bookworm ($BASE_PACKAGES) from $DEBIAN_MIRROR"
        started=$SECONDS
        rootfs="$WORK/rootfs"
        timeout "$BUILD_TIMEOUT_S" debootstrap --variant=minbase --include="$BASE_PACKAGES" \
            bookworm "$rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
            || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap failed or ran past ${BUILD_TIMEOUT_S} s (log above)"; }
        printf '%s\n' "$DPKG_EXCLUDES" >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim"
        find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
        find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
        rm -rf "$rootfs/usr/share/man/"* "$rootfs/usr/share/info/"* "$rootfs/usr/share/locale/"* \
            "$rootfs/usr/share/lintian/"* "$rootfs/var/cache/apt/"*.bin "$rootfs/var/cache/apt/archives/"*.deb \
            "$rootfs/var/lib/apt/lists/"*
        tar -C "$rootfs" -c . | docker import --change 'CMD ["python3"]' \
            --change "LABEL sd.base.recipe=\"$BASE_RECIPE\"" - "$BASE_TAG" >/dev/null
        rm -rf "$rootfs"
        BASE_SECONDS="$((SECONDS - started)) s"
        log "base image $BASE_TAG built in $BASE_SECONDS: $(($(docker image inspect -f '{{.Size}}' "$BASE_TAG") / 1000000)) MB"
        # The base this run replaced: removed unless another image still uses it.
        if [ -n "$old_base_id" ]; then docker rmi "$old_base_id" >/dev/null 2>&1 || true; fi
    fi
    docker run --rm --network none "$BASE_TAG" python3 -c "import sys, venv; assert sys.version_info[:2] == (3, 11), sys.version" \
        || fail "$BASE_TAG has no Python 3.11 with venv"
}

# make_context DIR [torch]: the build context: the sources (the .dockerignore allow-list), the host's CA
# bundle for pip (never copied into a final image), and with "torch" the local CPU wheel of torch.
make_context() {
    local ctx=$1
    mkdir -p "$ctx"
    cp -r "$REPO/pyproject.toml" "$REPO/setup.py" "$REPO/README.md" "$REPO/Dockerfile" "$REPO/.dockerignore" \
        "$REPO/sdcore" "$REPO/sdcli" "$REPO/service" "$REPO/training" "$REPO/loadtest" "$REPO/configs" "$ctx/"
    # The kernel is built inside the image; a host build (.so, generated .c) must not travel into it.
    rm -f "$ctx"/sdcore/*.so "$ctx"/sdcore/_ngram_kernel.c
    find "$ctx" -name __pycache__ -prune -exec rm -rf {} +
    if [ -f "$HOST_CA" ]; then cp "$HOST_CA" "$ctx/docker-ca.crt"; fi
    if [ "${2:-}" = torch ]; then
        mkdir -p "$ctx/docker-wheels"
        cp "$TORCH_WHEELS"/torch-2.13.0+cpu-*.whl "$ctx/docker-wheels/" || fail "no torch CPU wheel in $TORCH_WHEELS"
    fi
}

image_mb() { echo $(($(docker image inspect -f '{{.Size}}' "$1") / 1000000)); }
