#!/usr/bin/env bash
# Side-by-side build benchmark: kiln vs a real BuildKit (buildkitd + buildctl), on loopback only;
# kiln both as `kiln build` and as `kiln buildkitd` driven by the same buildctl. See
# benches/README.md. Usage:
#
#   sudo benches/run.sh [--json FILE] [--kiln PATH] [--buildkit DIR] [--no-buildkit]
#                       [--no-endpoint] [--cases cprog,runs30,...] [--repeat N]
#                       [--timeout SECONDS] [--keep]
#
# Exits non-zero only when kiln (or the set-up) fails; slow results are reported as MISS.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
KILN=${KILN:-$REPO/target/release/kiln}
BUILDKIT_DIR=${BUILDKIT_DIR:-/opt/buildkit-current}
USE_BUILDKIT=1
USE_ENDPOINT=1
JSON_OUT=""
CASES=$(python3 "$HERE/cases.py" list | tr '\n' ' ')
SCENARIOS="cold warm edit"
TIMEOUT=${BENCH_TIMEOUT:-600}
CACHE_DIR=${BENCH_CACHE:-/var/cache/kiln-bench}
KEEP=0
REPEAT=1

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --json) JSON_OUT=$2; shift 2 ;;
        --kiln) KILN=$2; shift 2 ;;
        --buildkit) BUILDKIT_DIR=$2; shift 2 ;;
        --no-buildkit) USE_BUILDKIT=0; shift ;;
        --no-endpoint) USE_ENDPOINT=0; shift ;;
        --cases) CASES=${2//,/ }; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --repeat) REPEAT=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 2; }

# ---------------------------------------------------------------- preconditions
[ "$(id -u)" = 0 ] || die "must run as root (kiln's RUN steps need root today)"
case "$REPEAT" in ""|*[!0-9]*|0) die "--repeat needs a positive integer" ;; esac
[ -x "$KILN" ] || die "kiln binary not found at $KILN (cargo build --release -p kiln, or --kiln PATH)"
[ -n "$JSON_OUT" ] && case "$JSON_OUT" in /*) ;; *) JSON_OUT=$PWD/$JSON_OUT ;; esac
apt_need() { # apt_need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null || die "apt-get install $2 failed"
}
for t in /usr/sbin/runc /usr/bin/docker-registry /bin/busybox; do
    [ -x "$t" ] || die "$t not installed (Debian packages: runc docker-registry busybox-static)"
done
apt_need /usr/bin/time time
apt_need curl curl
apt_need python3 python3

BK_BIN=""
if [ "$USE_BUILDKIT" = 1 ]; then
    if [ -x "$BUILDKIT_DIR/bin/buildkitd" ] && [ -x "$BUILDKIT_DIR/bin/buildctl" ]; then
        BK_BIN=$BUILDKIT_DIR/bin
    else
        echo "SKIP buildkit: $BUILDKIT_DIR/bin/buildkitd not found"
    fi
fi

# Nothing here may leave the machine: no proxies for loopback traffic.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost,::1 no_proxy=127.0.0.1,localhost,::1

# ---------------------------------------------------------------- work dir + cleanup
WORK=$(mktemp -d /var/tmp/kiln-bench.XXXXXX)
LOGS=$WORK/logs
mkdir -p "$LOGS"
RESULTS=$WORK/results.tsv
: > "$RESULTS"
REG_PID=""
BK_PID=""
KE_PID=""
KILN_FAILED=0

unmount_under() { # lazily unmount anything left mounted below $1, deepest first
    local m
    findmnt -rn -o TARGET 2>/dev/null | awk -v p="$1/" 'index($0, p) == 1' | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
stop_pid() { # stop_pid PID: TERM, then KILL after 10 s
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    stop_pid "$BK_PID"
    stop_pid "$KE_PID"
    stop_pid "$REG_PID"
    unmount_under "$WORK"
    rm -rf "$WORK/trash"
    if [ "$KEEP" = 1 ]; then
        log "kept $WORK"
    else
        if [ "$KILN_FAILED" = 1 ]; then
            cp -a "$LOGS" "$WORK.logs" && log "kiln failed at least once; logs kept in $WORK.logs"
        fi
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# State directories are set aside, not deleted, until the end: deleting gigabytes on a file
# system mounted with `discard` slows the next builder's writes for a while, and would charge
# one builder for another's clean-up.
TRASH_N=0
set_aside() { # set_aside DIR...
    local d
    mkdir -p "$WORK/trash"
    for d in "$@"; do
        [ -e "$d" ] || continue
        TRASH_N=$((TRASH_N + 1))
        mv "$d" "$WORK/trash/$TRASH_N"
    done
}
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- registry
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
cat > "$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry-data
  delete:
    enabled: true
http:
  addr: $REG
  secret: kiln-bench
EOF
/usr/bin/docker-registry serve "$WORK/registry.yml" > "$LOGS/registry.log" 2>&1 &
REG_PID=$!
for i in $(seq 1 100); do
    curl -fsS --noproxy '*' -o /dev/null "http://$REG/v2/" 2>/dev/null && break
    kill -0 "$REG_PID" 2>/dev/null || die "registry exited: $(tail -5 "$LOGS/registry.log")"
    sleep 0.1
done
curl -fsS --noproxy '*' -o /dev/null "http://$REG/v2/" || die "registry did not come up on $REG"
log "registry on $REG (data in $WORK/registry-data)"

KCONF=$WORK/kiln.toml
printf '# kiln bench: defaults only (loopback registries are plain HTTP already)\n' > "$KCONF"
BKCONF=$WORK/buildkitd.toml
printf '[registry."%s"]\n  http = true\n' "$REG" > "$BKCONF"

# ---------------------------------------------------------------- seed base images (with kiln)
seed_image() { # seed_image NAME CONTEXT
    local name=$1 ctx=$2
    printf 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nCMD ["sh"]\n' > "$ctx/Dockerfile"
    log "seeding $REG/$name:latest"
    if ! timeout "$TIMEOUT" "$KILN" --root "$WORK/seed-root" --config "$KCONF" build --progress plain \
        -t "$REG/$name:latest" --push "$ctx" > "$LOGS/seed-$name.log" 2>&1; then
        tail -20 "$LOGS/seed-$name.log" >&2
        die "kiln failed to seed $name (log: $LOGS/seed-$name.log)"
    fi
}

bb=$WORK/seed-busybox/rootfs
mkdir -p "$bb"/{bin,etc,tmp,root,home/user,dev,proc,sys}
chmod 1777 "$bb/tmp"
cp /bin/busybox "$bb/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$bb/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n' > "$bb/etc/passwd"
printf 'root:x:0:\nuser:x:1000:\n' > "$bb/etc/group"
chown 1000:1000 "$bb/home/user"
seed_image busybox "$WORK/seed-busybox"

need_gcc=0
for c in $CASES; do [ "$c" = cprog ] && need_gcc=1; done
if [ "$need_gcc" = 1 ]; then
    tarball=$CACHE_DIR/debian-gcc-bookworm.tar
    if [ ! -s "$tarball" ]; then
        apt_need mmdebstrap mmdebstrap
        mkdir -p "$CACHE_DIR"
        log "creating $tarball with mmdebstrap (cached for later runs)"
        mmdebstrap --variant=minbase --include=gcc,libc6-dev,make bookworm "$tarball.tmp.tar" \
            http://deb.debian.org/debian > "$LOGS/mmdebstrap.log" 2>&1 ||
            die "mmdebstrap failed: $(tail -5 "$LOGS/mmdebstrap.log")"
        mv "$tarball.tmp.tar" "$tarball"
    fi
    mkdir -p "$WORK/seed-debian/rootfs"
    # Device nodes are the runtime's business, not the image's.
    tar -xpf "$tarball" --numeric-owner --exclude='./dev/*' -C "$WORK/seed-debian/rootfs" ||
        die "extracting $tarball failed"
    seed_image debian-gcc "$WORK/seed-debian"
fi
unmount_under "$WORK/seed-root"
set_aside "$WORK/seed-root" "$WORK/seed-busybox" "$WORK/seed-debian"

# ---------------------------------------------------------------- measuring
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
REP=1
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" "$REP" >> "$RESULTS"; } # builder case scenario secs rss_kib status (rep)

kiln_build() { # kiln_build CASE SCENARIO CONTEXT
    local case=$1 sc=$2 ctx=$3 t0 t1 rc rss status
    local logf=$LOGS/kiln-$case-$sc.log
    t0=$(now)
    /usr/bin/time -v -o "$logf.time" timeout "$TIMEOUT" \
        "$KILN" --root "$WORK/kiln-root" --config "$KCONF" build --progress plain \
        -t "$REG/bench/kiln-$case:latest" --push "$ctx" > "$logf" 2>&1
    rc=$?
    t1=$(now)
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$logf.time" 2>/dev/null)
    status=ok
    if [ "$rc" != 0 ]; then
        status=fail; [ "$rc" = 124 ] && status=timeout
        KILN_FAILED=1
        log "kiln $case/$sc FAILED (exit $rc), last lines of $logf:"
        tail -15 "$logf" | sed 's/^/    /' >&2
    fi
    record kiln "$case" "$sc" "$(elapsed "$t0" "$t1")" "${rss:-}" "$status"
    log "kiln     $case/$sc #$REP: $(elapsed "$t0" "$t1") s, max RSS ${rss:-?} KiB, $status"
}

wait_daemon() { # wait_daemon PID SOCKET: until buildctl gets an answer (30 s), or the daemon exits
    local i
    for i in $(seq 1 300); do
        "$BK_BIN/buildctl" --addr "unix://$2" debug workers > /dev/null 2>&1 && return 0
        kill -0 "$1" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
bk_start() { # fresh buildkitd with an empty state dir
    set_aside "$WORK/bk-root"
    "$BK_BIN/buildkitd" --root "$WORK/bk-root" --addr "unix://$WORK/bk.sock" \
        --oci-worker=true --containerd-worker=false --config "$BKCONF" > "$LOGS/buildkitd-$1.log" 2>&1 &
    BK_PID=$!
    wait_daemon "$BK_PID" "$WORK/bk.sock" && return 0
    log "buildkitd did not start: $(tail -5 "$LOGS/buildkitd-$1.log")"
    stop_pid "$BK_PID"; BK_PID=""
    return 1
}
bk_stop() { # records buildkitd's peak RSS (VmHWM) for the case, then stops it
    local hwm
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$BK_PID/status" 2>/dev/null)
    record buildkitd "$1" all "" "${hwm:-}" ok
    stop_pid "$BK_PID"; BK_PID=""
    unmount_under "$WORK/bk-root"
    set_aside "$WORK/bk-root"
}

buildctl_build() { # buildctl_build BUILDER SOCKET CASE SCENARIO CONTEXT
    local builder=$1 sock=$2 case=$3 sc=$4 ctx=$5 t0 t1 rc status
    local logf=$LOGS/$builder-$case-$sc.log
    t0=$(now)
    timeout "$TIMEOUT" "$BK_BIN/buildctl" --addr "unix://$sock" build --progress plain \
        --frontend dockerfile.v0 --local "context=$ctx" --local "dockerfile=$ctx" \
        --output "type=image,name=$REG/bench/$builder-$case:latest,push=true,registry.insecure=true" \
        > "$logf" 2>&1
    rc=$?
    t1=$(now)
    status=ok
    if [ "$rc" != 0 ]; then
        status=fail; [ "$rc" = 124 ] && status=timeout
        [ "$builder" = endpoint ] && KILN_FAILED=1
        log "$builder $case/$sc FAILED (exit $rc), last lines of $logf:"
        tail -15 "$logf" | sed 's/^/    /' >&2
    fi
    record "$builder" "$case" "$sc" "$(elapsed "$t0" "$t1")" "" "$status"
    log "$builder $case/$sc #$REP: $(elapsed "$t0" "$t1") s, $status"
}
bk_build() { buildctl_build buildkit "$WORK/bk.sock" "$@"; }

ke_start() { # `kiln buildkitd` with an empty state dir, on a unix socket
    unmount_under "$WORK/ke-root"; set_aside "$WORK/ke-root"; rm -f "$WORK/ke.sock"
    "$KILN" --root "$WORK/ke-root" --config "$KCONF" buildkitd --addr "unix://$WORK/ke.sock" \
        > "$LOGS/kiln-buildkitd-$1.log" 2>&1 &
    KE_PID=$!
    wait_daemon "$KE_PID" "$WORK/ke.sock" && return 0
    log "kiln buildkitd did not start: $(tail -5 "$LOGS/kiln-buildkitd-$1.log")"
    stop_pid "$KE_PID"; KE_PID=""
    return 1
}
ke_stop() { # records the endpoint's peak RSS (VmHWM) for the case, then stops it
    local hwm
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$KE_PID/status" 2>/dev/null)
    record kiln-buildkitd "$1" all "" "${hwm:-}" ok
    stop_pid "$KE_PID"; KE_PID=""
    unmount_under "$WORK/ke-root"
    set_aside "$WORK/ke-root"
}

fresh_context() { # fresh_context CASE BUILDER -> path of a pristine copy of the case's context
    local dir=$WORK/ctx/$2-$1
    rm -rf "$dir"
    cp -a "$WORK/cases/$1" "$dir"
    sync # the previous builder's writes are flushed before this one starts
    echo "$dir"
}

# ---------------------------------------------------------------- run
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
busy=$(awk -v n="$(nproc)" '{print ($1 > n / 2) ? 1 : 0}' /proc/loadavg)
[ "$busy" = 1 ] && log "WARNING: load average is $LOAD_START before the benchmark; other work will skew timings"
for c in $CASES; do
    python3 "$HERE/cases.py" gen "$c" "$WORK/cases/$c" "$REG" || die "generating case $c failed"
done
mkdir -p "$WORK/ctx"

for c in $CASES; do
  for REP in $(seq 1 "$REPEAT"); do
    # kiln: cold = empty --root, warm = same build again, edit = one file changed.
    ctx=$(fresh_context "$c" kiln)
    unmount_under "$WORK/kiln-root"; set_aside "$WORK/kiln-root"
    for sc in $SCENARIOS; do
        [ "$sc" = edit ] && python3 "$HERE/cases.py" edit "$c" "$ctx"
        kiln_build "$c" "$sc" "$ctx"
    done
    unmount_under "$WORK/kiln-root"; set_aside "$WORK/kiln-root" "$ctx"

    if [ -n "$BK_BIN" ]; then
        ctx=$(fresh_context "$c" buildkit)
        if bk_start "$c"; then
            for sc in $SCENARIOS; do
                [ "$sc" = edit ] && python3 "$HERE/cases.py" edit "$c" "$ctx"
                bk_build "$c" "$sc" "$ctx"
            done
            bk_stop "$c"
        else
            for sc in $SCENARIOS; do record buildkit "$c" "$sc" "" "" fail; done
        fi
        set_aside "$ctx"
    fi

    # The same buildctl against kiln's BuildKit endpoint.
    if [ -n "$BK_BIN" ] && [ "$USE_ENDPOINT" = 1 ]; then
        ctx=$(fresh_context "$c" endpoint)
        if ke_start "$c"; then
            for sc in $SCENARIOS; do
                [ "$sc" = edit ] && python3 "$HERE/cases.py" edit "$c" "$ctx"
                buildctl_build endpoint "$WORK/ke.sock" "$c" "$sc" "$ctx"
            done
            ke_stop "$c"
        else
            KILN_FAILED=1
            for sc in $SCENARIOS; do record endpoint "$c" "$sc" "" "" fail; done
        fi
        set_aside "$ctx"
    fi
  done
done

# ---------------------------------------------------------------- report
meta=(--load "$LOAD_START / $(cut -d' ' -f1-3 /proc/loadavg)" --repeat "$REPEAT" --kiln-version "$("$KILN" --version 2>/dev/null | head -1)" --nproc "$(nproc)"
      --registry "$REG")
[ -n "$BK_BIN" ] && meta+=(--buildkit-version "$("$BK_BIN/buildkitd" --version 2>/dev/null | head -1)")
[ -n "$JSON_OUT" ] && meta+=(--json "$JSON_OUT")
python3 "$HERE/report.py" "$RESULTS" "${meta[@]}"

[ "$KILN_FAILED" = 1 ] && exit 1
exit 0
