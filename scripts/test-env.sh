#!/usr/bin/env bash
# Starts, stops and reports the real container engines that the integration tests use:
# a private dockerd, a podman API service and a loopback image registry, all under
# /tmp/archipelago-test, plus two test images on both engines and in the registry: the tiny
# archipelago-test/busybox:latest and archipelago-test/servers:latest, a Debian bookworm root
# file system with the real tor, redis, postgresql and nginx packages (built with debootstrap
# and cached under /var/cache/archipelago-test; ARCHIPELAGO_TEST_REBUILD_SERVERS=1 rebuilds it).
# The backup tests' targets are installed here too (restic, openssh-server for a private
# sshd that each test starts, moto's S3 server in a venv); the tests start and stop them.
#
# usage: scripts/test-env.sh up|down|status|env
#
#   up      install what is missing (Debian packages), start whatever is not answering,
#           build and load the test images; safe to run again
#   down [docker|podman|registry]...
#           remove leftover archipelago-* containers, then stop the named services (all three
#           by default)
#   status [docker|podman|registry]
#           say what is running; with a name, only the exit code tells whether it is up
#   env     print `export` lines for the test environment (eval "$(scripts/test-env.sh env)")
set -euo pipefail

BASE=/tmp/archipelago-test
DOCKER_SOCK="$BASE/docker.sock"
DOCKER_PID="$BASE/docker.pid"
DOCKER_LOG="$BASE/docker.log"
DOCKER_CONFIG="$BASE/docker-daemon.json"
# Subnets of the private dockerd's networks: its own, so that traffic between its containers
# can be let through the host's forward filter without opening anything else.
DOCKER_POOL="10.213.0.0/16"
PODMAN_SOCK="$BASE/podman.sock"
PODMAN_PID="$BASE/podman.pid"
PODMAN_LOG="$BASE/podman.log"
SYSTEM_DOCKER_SOCK=/var/run/docker.sock
REGISTRY_ADDR="127.0.0.1:5000"
REGISTRY_NAME="localhost:5000"
REGISTRY_PID="$BASE/registry.pid"
REGISTRY_LOG="$BASE/registry.log"
REGISTRY_CONFIG="$BASE/registry.yml"
REGISTRY_DATA="$BASE/registry"
IMAGE="archipelago-test/busybox:latest"
REGISTRY_IMAGE="$REGISTRY_NAME/archipelago-test/busybox:1"
SERVERS_IMAGE="archipelago-test/servers:latest"
SERVERS_REGISTRY_IMAGE="$REGISTRY_NAME/archipelago-test/servers:1"
# The servers image's root file system: what debootstrap installs, and from where. The tar is
# cached across `down` in SERVERS_CACHE under a name keyed on these settings and on
# SERVERS_RECIPE (bump it when build_servers_rootfs changes what goes into the tar).
SERVERS_CACHE=${ARCHIPELAGO_TEST_CACHE:-/var/cache/archipelago-test}
SERVERS_SUITE=bookworm
SERVERS_MIRROR=${ARCHIPELAGO_TEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SERVERS_PACKAGES=tor,redis-server,postgresql,nginx-light,netcat-openbsd,procps
SERVERS_DEBOOTSTRAP_ARGS=(--variant=minbase "--include=$SERVERS_PACKAGES")
SERVERS_RECIPE=1
# Image label holding the cache key the image was imported from.
SERVERS_LABEL=org.archipelago.test.rootfs-key
CONTAINERS_CONF=/etc/containers/containers.conf
REGISTRIES_DROPIN=/etc/containers/registries.conf.d/50-archipelago-test.conf
ULIMITS='default_ulimits = ["nofile=1024:1024","nproc=1024:1024"]'

PACKAGES=(docker.io iptables busybox-static docker-registry podman chromium chromium-driver
    docker-compose shellcheck systemd curl debootstrap
    restic openssh-server openssh-client python3-venv)

# The backup tests' S3-compatible server on loopback: moto in its own venv (PyPI).
MOTO_VENV="$BASE/moto"
MOTO_PACKAGE="moto[server]==5.2.5"

# Seconds each start and stop may take before the script gives up with an error.
START_TIMEOUT=${ARCHIPELAGO_TEST_START_TIMEOUT:-60}
STOP_TIMEOUT=20

log() { printf 'test-env: %s\n' "$*" >&2; }
die() {
    printf 'test-env: error: %s\n' "$*" >&2
    exit 1
}

docker_cli() { docker -H "unix://$DOCKER_SOCK" "$@"; }
podman_cli() { podman --url "unix://$PODMAN_SOCK" "$@"; }

# True when the Docker-style API on the socket answers /_ping.
ping_socket() {
    [ -S "$1" ] && curl -fsS --max-time 2 --unix-socket "$1" http://localhost/_ping >/dev/null 2>&1
}

ping_registry() {
    curl -fsS --max-time 2 "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1
}

# wait_for NAME LOGFILE CHECK...: polls CHECK every 0.2 s for at most START_TIMEOUT seconds.
wait_for() {
    local name=$1 logfile=$2
    shift 2
    local deadline=$((SECONDS + START_TIMEOUT))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            log "last lines of $logfile:"
            tail -n 20 "$logfile" >&2 || true
            die "$name did not answer within ${START_TIMEOUT}s (log: $logfile)"
        fi
        sleep 0.2
    done
}

pid_alive() {
    local pid
    [ -f "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "missing packages (${missing[*]}); run as root to install them"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Update the package lists once, and only when they are absent or too old to install from.
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt-get update -q </dev/null
        apt-get install -y -q "${missing[@]}" </dev/null
    elif ! apt-get install -y -q "${missing[@]}" </dev/null; then
        apt-get update -q </dev/null
        apt-get install -y -q "${missing[@]}" </dev/null
    fi
}

# What the backup tests need besides the packages: moto's venv, and the privilege
# separation folder without which the private sshd each test starts refuses to run (the
# system's sshd is never touched).
setup_backup_targets() {
    mkdir -p /run/sshd
    if [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
        log "installing $MOTO_PACKAGE into $MOTO_VENV"
        rm -rf "$MOTO_VENV"
        /usr/bin/python3 -m venv "$MOTO_VENV"
        "$MOTO_VENV/bin/pip" install -q "$MOTO_PACKAGE" </dev/null
    fi
}

# Makes podman usable here: low default ulimits (the sandbox's hard limits are lower than
# podman's defaults) and the loopback registry reachable without TLS.
configure_podman() {
    mkdir -p /etc/containers/registries.conf.d
    if [ ! -f "$CONTAINERS_CONF" ]; then
        printf '[containers]\n%s\n' "$ULIMITS" >"$CONTAINERS_CONF"
    elif ! grep -qxF "$ULIMITS" "$CONTAINERS_CONF"; then
        # Replace default_ulimits inside [containers], or add it right after the header,
        # or append the section; other settings stay as they are.
        local tmp
        tmp=$(mktemp)
        awk -v line="$ULIMITS" '
            /^[[:space:]]*\[/ {
                if (in_c && !done) { print line; done = 1 }
                in_c = ($0 ~ /^[[:space:]]*\[containers\][[:space:]]*$/)
                print
                next
            }
            in_c && /^[[:space:]]*default_ulimits[[:space:]]*=/ {
                if (!done) { print line; done = 1 }
                # skip a value continued over several lines
                while ($0 !~ /\]/ && (getline) > 0) {}
                next
            }
            { print }
            END {
                if (in_c && !done) { print line; done = 1 }
                if (!done) { print ""; print "[containers]"; print line }
            }
        ' "$CONTAINERS_CONF" >"$tmp"
        cat "$tmp" >"$CONTAINERS_CONF"
        rm -f "$tmp"
    fi
    local dropin
    dropin=$(
        cat <<EOF
# Loopback registry used by archipelago's tests (scripts/test-env.sh).
[[registry]]
location = "$REGISTRY_NAME"
insecure = true

[[registry]]
location = "$REGISTRY_ADDR"
insecure = true
EOF
    )
    if [ "$(cat "$REGISTRIES_DROPIN" 2>/dev/null)" != "$dropin" ]; then
        printf '%s\n' "$dropin" >"$REGISTRIES_DROPIN"
    fi
}

start_docker() {
    if ping_socket "$DOCKER_SOCK"; then
        log "dockerd already answering on $DOCKER_SOCK"
        return 0
    fi
    if pid_alive "$DOCKER_PID"; then
        die "dockerd (pid $(cat "$DOCKER_PID")) is running but not answering on $DOCKER_SOCK; run '$0 down' first"
    fi
    rm -f "$DOCKER_SOCK" "$DOCKER_PID"
    mkdir -p "$BASE/docker-data" "$BASE/docker-exec"
    # An empty config of its own: /etc/docker/daemon.json belongs to the system dockerd, and
    # dockerd refuses to start when it sets what the flags below set (data-root, storage-driver).
    printf '{"default-address-pools": [{"base": "%s", "size": 24}]}\n' "$DOCKER_POOL" >"$DOCKER_CONFIG"
    log "starting dockerd (log: $DOCKER_LOG)"
    # Own config, data root, exec root (where its own containerd's socket lives) and containerd
    # namespaces: nothing is shared with a system dockerd or containerd.
    setsid nohup dockerd --iptables=false --ip-forward=false --bridge=none \
        --config-file "$DOCKER_CONFIG" --storage-driver=overlay2 -H "unix://$DOCKER_SOCK" \
        --data-root "$BASE/docker-data" --exec-root "$BASE/docker-exec" \
        --containerd-namespace archipelago-test \
        --containerd-plugins-namespace archipelago-test-plugins \
        --pidfile "$DOCKER_PID" >"$DOCKER_LOG" 2>&1 </dev/null &
    wait_for dockerd "$DOCKER_LOG" ping_socket "$DOCKER_SOCK"
}

# The private dockerd runs with --iptables=false, so it adds no forward rules; a system
# dockerd beside it sets the FORWARD policy to DROP, and bridged traffic passes through that
# chain (br_netfilter). This lets through what goes between the private dockerd's own
# containers (its address pool to its address pool) and nothing else.
allow_private_bridges() {
    command -v iptables >/dev/null || return 0
    iptables -S FORWARD >/dev/null 2>&1 || return 0
    if ! iptables -C FORWARD -s "$DOCKER_POOL" -d "$DOCKER_POOL" -j ACCEPT 2>/dev/null; then
        log "letting traffic between the private dockerd's containers ($DOCKER_POOL) through FORWARD"
        iptables -I FORWARD 1 -s "$DOCKER_POOL" -d "$DOCKER_POOL" -j ACCEPT
    fi
}

start_registry() {
    if ping_registry; then
        log "registry already answering on $REGISTRY_ADDR"
        return 0
    fi
    mkdir -p "$REGISTRY_DATA"
    cat >"$REGISTRY_CONFIG" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REGISTRY_DATA
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
EOF
    log "starting docker-registry (log: $REGISTRY_LOG)"
    setsid nohup docker-registry serve "$REGISTRY_CONFIG" >"$REGISTRY_LOG" 2>&1 </dev/null &
    echo $! >"$REGISTRY_PID"
    wait_for registry "$REGISTRY_LOG" ping_registry
}

start_podman() {
    if ping_socket "$PODMAN_SOCK"; then
        log "podman service already answering on $PODMAN_SOCK"
        return 0
    fi
    rm -f "$PODMAN_SOCK"
    log "starting podman system service (log: $PODMAN_LOG)"
    setsid nohup podman system service --time=0 "unix://$PODMAN_SOCK" \
        >"$PODMAN_LOG" 2>&1 </dev/null &
    echo $! >"$PODMAN_PID"
    wait_for "podman service" "$PODMAN_LOG" ping_socket "$PODMAN_SOCK"
}

# Builds the image tar: static busybox, one link per applet, /tmp and minimal passwd/group.
build_image_tar() {
    local out=$1 root applet
    local busybox=/bin/busybox
    [ -x "$busybox" ] || die "$busybox is missing; install busybox-static"
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/root"
    chmod 1777 "$root/tmp"
    cp "$busybox" "$root/bin/busybox"
    for applet in $("$busybox" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$out" .
    rm -rf "$root"
}

load_images() {
    local tmp
    if docker_cli image inspect "$IMAGE" >/dev/null 2>&1; then
        log "docker has $IMAGE"
    else
        tmp=$(mktemp -d)
        build_image_tar "$tmp/rootfs.tar"
        log "importing $IMAGE into docker"
        docker_cli import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' \
            "$tmp/rootfs.tar" "$IMAGE" >/dev/null
        rm -rf "$tmp"
    fi
    if podman_cli image exists "$IMAGE" 2>/dev/null; then
        log "podman has $IMAGE"
    else
        tmp=$(mktemp -d)
        log "loading $IMAGE into podman"
        docker_cli save -o "$tmp/image.tar" "$IMAGE"
        podman_cli load -q -i "$tmp/image.tar" >/dev/null
        rm -rf "$tmp"
        podman_cli image exists "$IMAGE" || die "podman load did not give $IMAGE"
    fi
    docker_cli tag "$IMAGE" "$REGISTRY_IMAGE"
    log "pushing $REGISTRY_IMAGE"
    docker_cli push -q "$REGISTRY_IMAGE" >/dev/null
}

# The machine's own dockerd (the engine node owners run), when it answers: the engine
# tests and the real-server tests run against it too, with the busybox and servers images.
# Only images are added; nothing else of that engine is touched, started or stopped.
load_into_system_docker() {
    local image
    if ! ping_socket "$SYSTEM_DOCKER_SOCK"; then
        log "no system dockerd at $SYSTEM_DOCKER_SOCK"
        return 0
    fi
    for image in "$IMAGE" "$SERVERS_IMAGE"; do
        if [ "$(docker -H "unix://$SYSTEM_DOCKER_SOCK" image inspect -f '{{.Id}}' "$image" 2>/dev/null)" = \
            "$(docker_cli image inspect -f '{{.Id}}' "$image")" ]; then
            log "system docker has $image"
            continue
        fi
        log "loading $image into the system docker"
        docker_cli save "$image" | docker -H "unix://$SYSTEM_DOCKER_SOCK" load -q >/dev/null
    done
}

# The cached root file system tar of the servers image; its name changes with the settings.
servers_key() {
    printf '%s\n' "$SERVERS_SUITE" "${SERVERS_DEBOOTSTRAP_ARGS[@]}" "$SERVERS_RECIPE" |
        sha256sum | cut -c1-16
}

servers_tar() { echo "$SERVERS_CACHE/servers-rootfs-$SERVERS_SUITE-$(servers_key).tar"; }

# remove_tree DIR: unmounts whatever is still mounted below DIR (an interrupted debootstrap
# leaves /proc and /sys mounted in its target), then deletes DIR without leaving its file system.
remove_tree() {
    local dir mnt
    [ -d "$1" ] || return 0
    dir=$(realpath "$1")
    # /proc/self/mounts escapes blanks as \040; the build dirs have none.
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r mnt; do
            umount -l "$mnt" || log "could not unmount $mnt"
        done
    rm -rf --one-file-system "$dir"
}

# Builds the servers root file system with debootstrap and caches its tar at $(servers_tar),
# unless it is there already (ARCHIPELAGO_TEST_REBUILD_SERVERS=1: even then). Takes a minute
# or two, ~1 GB while building and ~430 MB for the tar.
build_servers_rootfs() {
    local tar build root start f lock reuse=1
    tar=$(servers_tar)
    [ "${ARCHIPELAGO_TEST_REBUILD_SERVERS:-0}" != 1 ] || reuse=0
    if [ "$(id -u)" -ne 0 ]; then
        [ "$reuse" = 1 ] && [ -f "$tar" ] && return 0
        die "run as root to build $tar with debootstrap"
    fi
    mkdir -p "$SERVERS_CACHE"
    # One build at a time; a concurrent 'up' waits, then uses what the first one built.
    exec {lock}>"$SERVERS_CACHE/.lock"
    if ! flock -n "$lock"; then
        log "waiting for another build of the servers root file system"
        flock "$lock"
        reuse=1
    fi
    # Leftovers of interrupted builds.
    for f in "$SERVERS_CACHE"/build.*; do
        [ -e "$f" ] || continue
        log "removing leftover $f"
        remove_tree "$f"
    done
    if [ "$reuse" = 1 ] && [ -f "$tar" ]; then
        exec {lock}>&-
        return 0
    fi
    build=$(mktemp -d "$SERVERS_CACHE/build.XXXXXX")
    root="$build/root"
    start=$SECONDS
    log "building the servers root file system with debootstrap (log: $build/debootstrap.log)"
    if ! debootstrap "${SERVERS_DEBOOTSTRAP_ARGS[@]}" "$SERVERS_SUITE" "$root" \
        "$SERVERS_MIRROR" >"$build/debootstrap.log" 2>&1 </dev/null; then
        tail -n 20 "$build/debootstrap.log" >&2 || true
        [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 20 "$root/debootstrap/debootstrap.log" >&2
        die "debootstrap failed; left $build for a look (the next 'up' removes it)"
    fi
    # What the tests rely on, checked inside the root file system (its alternatives links are
    # absolute); fail here rather than cache a tar without it.
    # shellcheck disable=SC2016 # expanded by the shell inside the root file system
    if ! chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -ec '
        id debian-tor; id postgres; id redis
        tor --version; redis-server --version; ls /usr/lib/postgresql/*/bin/initdb
        for c in redis-cli psql nc; do command -v "$c"; done' >"$build/check.log" 2>&1; then
        cat "$build/check.log" >&2
        die "the servers root file system lacks something the tests need; left $build"
    fi
    # Package lists, caches, logs and documentation are only weight (as in Debian's slim
    # images); the engines provide resolv.conf and hostname.
    rm -rf "${root:?}"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
        "$root"/var/log/apt/* "$root"/var/log/*.log "$root"/tmp/* "$root"/var/tmp/* \
        "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*/
    find "$root/usr/share/doc" -type f ! -name copyright -delete
    : >"$root/etc/resolv.conf"
    : >"$root/etc/hostname"
    tar -C "$root" --numeric-owner -cf "$build/rootfs.tar" .
    # A rename within the cache's file system: the cached tar is always a whole one.
    mv -f "$build/rootfs.tar" "$tar"
    remove_tree "$build"
    # Tars of other settings are stale.
    for f in "$SERVERS_CACHE"/servers-rootfs-*.tar; do
        [ "$f" = "$tar" ] || rm -f "$f"
    done
    exec {lock}>&-
    log "built $tar ($(du -h "$tar" | cut -f1)) in $((SECONDS - start))s"
}

# image_id docker|podman IMAGE: the image's ID as sha256:HEX (podman leaves out the
# prefix), or nothing when it is absent.
image_id() {
    local id
    id=$("${1}_cli" image inspect --format '{{.Id}}' "$2" 2>/dev/null) || return 0
    echo "sha256:${id#sha256:}"
}

# Imports the servers image into docker (when missing or built from other settings), loads it
# into podman and pushes it to the registry, skipping each step that is already done.
load_servers_image() {
    local key tar tmp id start repo old_docker old_podman
    key=$(servers_key)
    tar=$(servers_tar)
    old_docker=$(image_id docker "$SERVERS_IMAGE")
    old_podman=$(image_id podman "$SERVERS_IMAGE")
    if [ "${ARCHIPELAGO_TEST_REBUILD_SERVERS:-0}" != 1 ] &&
        [ "$(docker_cli image inspect --format "{{index .Config.Labels \"$SERVERS_LABEL\"}}" \
            "$SERVERS_IMAGE" 2>/dev/null)" = "$key" ]; then
        log "docker has $SERVERS_IMAGE"
    else
        build_servers_rootfs
        log "importing $SERVERS_IMAGE into docker"
        start=$SECONDS
        docker_cli import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' --change "LABEL $SERVERS_LABEL=$key" \
            "$tar" "$SERVERS_IMAGE" >/dev/null
        log "imported $SERVERS_IMAGE in $((SECONDS - start))s"
    fi
    id=$(image_id docker "$SERVERS_IMAGE")
    [ -n "$id" ] || die "docker import did not give $SERVERS_IMAGE"
    # docker save | podman load keeps the image ID, so an equal ID means the same image.
    if [ "$(image_id podman "$SERVERS_IMAGE")" = "$id" ]; then
        log "podman has $SERVERS_IMAGE"
    else
        tmp=$(mktemp -d)
        log "loading $SERVERS_IMAGE into podman"
        start=$SECONDS
        docker_cli save -o "$tmp/image.tar" "$SERVERS_IMAGE"
        podman_cli load -q -i "$tmp/image.tar" >/dev/null
        rm -rf "$tmp"
        [ "$(image_id podman "$SERVERS_IMAGE")" = "$id" ] ||
            die "podman load did not give $SERVERS_IMAGE ($id)"
        log "loaded $SERVERS_IMAGE into podman in $((SECONDS - start))s"
    fi
    # The registry's manifest names the image ID as its config digest.
    repo=${SERVERS_REGISTRY_IMAGE#"$REGISTRY_NAME"/}
    if curl -fsS --max-time 5 \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://$REGISTRY_ADDR/v2/${repo%:*}/manifests/${repo##*:}" 2>/dev/null |
        grep -qF "\"$id\""; then
        log "registry has $SERVERS_REGISTRY_IMAGE"
    else
        docker_cli tag "$SERVERS_IMAGE" "$SERVERS_REGISTRY_IMAGE"
        log "pushing $SERVERS_REGISTRY_IMAGE"
        start=$SECONDS
        docker_cli push -q "$SERVERS_REGISTRY_IMAGE" >/dev/null
        log "pushed $SERVERS_REGISTRY_IMAGE in $((SECONDS - start))s"
    fi
    # A replaced image is untagged now; drop it unless a container still uses it.
    if [ -n "$old_docker" ] && [ "$old_docker" != "$id" ]; then
        docker_cli rmi "$old_docker" >/dev/null 2>&1 || true
    fi
    if [ -n "$old_podman" ] && [ "$old_podman" != "$id" ]; then
        podman_cli rmi "$old_podman" >/dev/null 2>&1 || true
    fi
}

cmd_up() {
    mkdir -p "$BASE"
    install_packages
    setup_backup_targets
    configure_podman
    start_docker
    allow_private_bridges
    start_registry
    start_podman
    load_images
    load_servers_image
    load_into_system_docker
    log "ready: docker unix://$DOCKER_SOCK, podman unix://$PODMAN_SOCK, registry $REGISTRY_NAME"
}

# remove_test_containers docker|podman: force-removes every container named archipelago-*.
remove_test_containers() {
    local engine=$1 cli names
    cli=${engine}_cli
    names=$("$cli" ps -a --format '{{.Names}}' 2>/dev/null | grep '^archipelago-' || true)
    [ -n "$names" ] || return 0
    log "$engine: removing leftover containers: $(echo "$names" | tr '\n' ' ')"
    local extra=()
    # podman's rm -f would first wait out the stop timeout
    [ "$engine" = podman ] && extra=(-t 0)
    # shellcheck disable=SC2086 # one name per word
    "$cli" rm -f "${extra[@]}" $names >/dev/null || log "$engine: could not remove every container"
}

# stop_pid NAME PIDFILE: SIGTERM, wait up to STOP_TIMEOUT seconds, then SIGKILL.
stop_pid() {
    local name=$1 pidfile=$2 pid deadline
    if ! pid_alive "$pidfile"; then
        rm -f "$pidfile"
        return 0
    fi
    pid=$(cat "$pidfile")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "$name did not stop within ${STOP_TIMEOUT}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$pidfile"
}

# down [docker|podman|registry]...: stops the named services, or all three.
cmd_down() {
    local what=("$@") w left=()
    [ "${#what[@]}" -gt 0 ] || what=(docker podman registry)
    for w in "${what[@]}"; do
        case "$w" in
        docker | podman | registry) ;;
        *) die "unknown service '$w' (want docker, podman or registry)" ;;
        esac
    done
    # Containers first, while both engines still answer.
    for w in "${what[@]}"; do
        case "$w" in
        docker) if ping_socket "$DOCKER_SOCK"; then remove_test_containers docker; fi ;;
        podman) if ping_socket "$PODMAN_SOCK"; then remove_test_containers podman; fi ;;
        esac
    done
    for w in "${what[@]}"; do
        case "$w" in
        podman)
            stop_pid "podman service" "$PODMAN_PID"
            if ping_socket "$PODMAN_SOCK"; then left+=("podman on $PODMAN_SOCK"); else rm -f "$PODMAN_SOCK"; fi
            ;;
        registry)
            stop_pid registry "$REGISTRY_PID"
            if ping_registry; then left+=("registry on $REGISTRY_ADDR"); fi
            ;;
        docker)
            stop_pid dockerd "$DOCKER_PID"
            if ping_socket "$DOCKER_SOCK"; then left+=("dockerd on $DOCKER_SOCK"); fi
            ;;
        esac
    done
    if [ "${#left[@]}" -gt 0 ]; then
        die "still answering (not started by this script?): ${left[*]}"
    fi
    log "stopped: ${what[*]}"
}

# status [docker|podman|registry]: reports all three (exit 1 if any is down), or only
# answers through the exit code whether the named one is up.
cmd_status() {
    case "${1:-}" in
    docker) ping_socket "$DOCKER_SOCK"; return ;;
    podman) ping_socket "$PODMAN_SOCK"; return ;;
    registry) ping_registry; return ;;
    "") ;;
    *) die "unknown service '$1' (want docker, podman or registry)" ;;
    esac
    local rc=0
    if ping_socket "$DOCKER_SOCK"; then
        echo "docker:   up    unix://$DOCKER_SOCK (server $(docker_cli version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    else
        echo "docker:   down  unix://$DOCKER_SOCK"
        rc=1
    fi
    if ping_socket "$PODMAN_SOCK"; then
        echo "podman:   up    unix://$PODMAN_SOCK"
    else
        echo "podman:   down  unix://$PODMAN_SOCK"
        rc=1
    fi
    if ping_registry; then
        echo "registry: up    $REGISTRY_NAME"
    else
        echo "registry: down  $REGISTRY_NAME"
        rc=1
    fi
    return "$rc"
}

cmd_env() {
    echo "export DOCKER_HOST=unix://$DOCKER_SOCK"
    echo "export ARCHIPELAGO_TEST_DOCKER_HOST=unix://$DOCKER_SOCK"
    echo "export ARCHIPELAGO_TEST_PODMAN_HOST=unix://$PODMAN_SOCK"
    echo "export ARCHIPELAGO_TEST_SYSTEM_DOCKER_HOST=unix://$SYSTEM_DOCKER_SOCK"
    echo "export ARCHIPELAGO_TEST_REGISTRY=$REGISTRY_NAME"
    echo "export ARCHIPELAGO_TEST_SERVERS_IMAGE=$SERVERS_IMAGE"
}

case "${1:-}" in
up) cmd_up ;;
down)
    shift
    cmd_down "$@"
    ;;
status) cmd_status "${2:-}" ;;
env) cmd_env ;;
*)
    echo "usage: $0 up | down [docker|podman|registry]... | status [docker|podman|registry] | env" >&2
    exit 2
    ;;
esac
