#!/usr/bin/env bash
# Prepares this machine for the integration tests, which start PostgreSQL
# through testcontainers:
#   1. a running Docker engine (installs docker.io and starts dockerd if needed);
#   2. the host tools the tests call (psql, python3, sha256sum, script, ssh-keygen);
#   3. local images postgres:13, postgres:15 and postgres:17, and
#      netpoint-prod-ssh:15, a "production" reachable only over SSH
#      (scripts/images/ssh-prod-entrypoint.sh), which is always built here;
#   4. Mermaid's CLI (@mermaid-js/mermaid-cli, pinned) in $MERMAID_DIR with Debian's
#      chromium as its browser, for the test that renders schema diagrams.
# An image that already exists is reused. Otherwise it is pulled, and when no
# registry is reachable (the normal case here) it is built offline: a minimal
# Debian root file system with that major's Debian package, from the Debian
# mirror that apt on this machine already uses, plus an entrypoint
# (scripts/images/postgres-entrypoint.sh) that behaves like the official image's.
#
# Idempotent: a second run only checks. Runs as root on Debian. On macOS it only
# checks that Docker Desktop, colima or OrbStack answers and pulls the images.
#
# Usage: scripts/test-prereqs.sh [--rebuild]
#   --rebuild        rebuild the postgres images even if they exist
# Environment:
#   PG_MAJORS        majors to provide (default: "13 15 17")
#   SSH_PROD_IMAGE   1 to build netpoint-prod-ssh:15 (default: 1 unless PG_MAJORS is set)
#   DEBIAN_MIRROR    Debian archive to bootstrap from (default: read from apt sources)
#   DOCKERD_LOG      dockerd's log file (default: /var/log/dockerd.log)
#   MERMAID_DIR      where Mermaid's CLI goes (default: /opt/netpoint-mermaid); the
#                    tests look there, or in $NETPOINT_MERMAID_DIR when set
set -Eeuo pipefail

# macOS: Docker runs in a VM that Docker Desktop, colima or OrbStack manages, and the
# registry is reachable, so there is nothing to install or build. (Plain bash 3.2 here:
# macOS ships no newer one, and the rest of this script needs bash 4.)
if [ "$(uname -s)" = Darwin ]; then
    fail() {
        printf '[test-prereqs] FAILED: %s\n' "$*" >&2
        exit 1
    }
    command -v docker >/dev/null 2>&1 ||
        fail "no docker command: install Docker Desktop, colima (brew install colima docker) or OrbStack, start it, then run again"
    docker info >/dev/null 2>&1 ||
        fail "Docker does not answer: start Docker Desktop, colima (colima start) or OrbStack, then run again"
    for major in ${PG_MAJORS:-13 15 17}; do
        if docker image inspect "postgres:$major" >/dev/null 2>&1; then
            printf '[test-prereqs] postgres:%s: present, reusing\n' "$major" >&2
        else
            docker pull -q "postgres:$major" >/dev/null ||
                fail "docker pull postgres:$major failed: check the network, or docker login if the registry asks"
            printf '[test-prereqs] postgres:%s: pulled\n' "$major" >&2
        fi
    done
    printf '[test-prereqs] OK: Docker %s running\n' "$(docker info --format '{{.ServerVersion}}')" >&2
    exit 0
fi

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ENTRYPOINT_SRC="$SCRIPT_DIR/images/postgres-entrypoint.sh"
SSH_ENTRYPOINT_SRC="$SCRIPT_DIR/images/ssh-prod-entrypoint.sh"
if [ -z "${SSH_PROD_IMAGE:-}" ]; then
    SSH_PROD_IMAGE=$([ -z "${PG_MAJORS:-}" ] && echo 1 || echo 0)
fi
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
read -r -a PG_MAJORS <<<"${PG_MAJORS:-13 15 17}"
# What to provide, by key: a major for postgres:<major>, ssh<major> for netpoint-prod-ssh:<major>.
IMAGES=("${PG_MAJORS[@]}")
[ "$SSH_PROD_IMAGE" != 1 ] || IMAGES+=(ssh15)
image_of() { case $1 in ssh*) echo "netpoint-prod-ssh:${1#ssh}" ;; *) echo "postgres:$1" ;; esac; }
# Debian release that ships each PostgreSQL major as its default version.
declare -A SUITE_OF=([13]=bullseye [15]=bookworm [17]=trixie)
# Bump when the image recipe below changes in a way that needs a rebuild; the
# entrypoint's content is part of the recipe hash anyway.
RECIPE_VERSION=1
REBUILD=0

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

log() { printf '[test-prereqs] %s\n' "$*" >&2; }
die() {
    printf '[test-prereqs] FAILED: %s\n' "$*" >&2
    exit 1
}
# Anything that fails without its own message still ends with one clear line.
on_error() {
    local rc=$? line=$1 cmd=$2
    printf "[test-prereqs] FAILED: '%s' exited %s (line %s)\n" "$cmd" "$rc" "$line" >&2
    exit "$rc"
}
trap 'on_error "$LINENO" "$BASH_COMMAND"' ERR

for arg in "$@"; do
    case "$arg" in
    --rebuild) REBUILD=1 ;;
    -h | --help)
        sed -n '2,/^set -Eeuo/{/^set/d;s/^# \{0,1\}//;p}' "$0"
        exit 0
        ;;
    *) die "unknown argument: $arg (try --help)" ;;
    esac
done

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts dockerd)"
[ -r "$ENTRYPOINT_SRC" ] || die "missing $ENTRYPOINT_SRC"
[ -r "$SSH_ENTRYPOINT_SRC" ] || die "missing $SSH_ENTRYPOINT_SRC"
for major in "${PG_MAJORS[@]}"; do
    [ -n "${SUITE_OF[$major]:-}" ] || die "no Debian suite known for PostgreSQL $major (known: $(printf "%s\n" "${!SUITE_OF[@]}" | sort -n | xargs))"
done

# --- apt helpers -------------------------------------------------------------
APT_LOG=/var/log/netpoint-test-prereqs-apt.log
APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        apt-get update >>"$APT_LOG" 2>&1 || die "apt-get update failed; see $APT_LOG"
        APT_UPDATED=1
    fi
    log "installing $* (log: $APT_LOG)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$APT_LOG" 2>&1 ||
        die "apt-get install $* failed; see $APT_LOG"
}

# The main Debian archive apt uses (not -security, not a third-party repo):
# the first source that offers this release's own suite with a "main" component.
debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then
        echo "$DEBIAN_MIRROR"
        return
    fi
    local codename
    # shellcheck source=/dev/null
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || die "cannot tell the Debian release from /etc/os-release; set DEBIAN_MIRROR"
    local files=()
    shopt -s nullglob
    files=(/etc/apt/sources.list.d/*.sources)
    shopt -u nullglob
    local mirror=""
    if [ ${#files[@]} -gt 0 ]; then
        # deb822 stanzas, separated by blank lines; field names are case-insensitive.
        mirror=$(awk -v want="$codename" '
            function flush(  i) {
                if (!found && types ~ /(^| )deb( |$)/ && enabled != "no" &&
                    suites ~ ("(^| )" want "( |$)") && comps ~ /(^| )main( |$)/)
                    for (i = 1; i <= n; i++)
                        if (uris[i] !~ /security/) { print uris[i]; found = 1; break }
                types = suites = comps = enabled = ""; n = 0
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                key = tolower($1); val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                if (key == "types:") types = val
                else if (key == "suites:") suites = val
                else if (key == "components:") comps = val
                else if (key == "enabled:") enabled = tolower(val)
                else if (key == "uris:") { n = split(val, uris, /[ \t]+/) }
            }
            END { flush() }' "${files[@]}")
    fi
    if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
        # One-line format: deb [options] URI suite component...
        mirror=$(awk -v want="$codename" '
            $1 != "deb" { next }
            {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                uri = $i; suite = $(i + 1); main = 0
                for (j = i + 2; j <= NF; j++) if ($j == "main") main = 1
                if (suite == want && main && uri !~ /security/) { print uri; exit }
            }' /etc/apt/sources.list)
    fi
    [ -n "$mirror" ] || die "no Debian archive for '$codename' with component main in /etc/apt/sources.list{,.d/*.sources}; set DEBIAN_MIRROR"
    echo "${mirror%/}"
}

# --- 1. Docker engine -------------------------------------------------------------
ensure_docker() {
    if docker info >/dev/null 2>&1; then
        log "Docker engine: already running ($(docker info --format '{{.ServerVersion}}'))"
        return
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        apt_install docker.io
        # The package may have started the daemon through its init script.
        if docker info >/dev/null 2>&1; then
            log "Docker engine: started by the docker.io package"
            return
        fi
    fi
    local pid=""
    if pgrep -x dockerd >/dev/null 2>&1; then
        log "dockerd is running but not answering yet; waiting for it"
    else
        log "starting dockerd (log: $DOCKERD_LOG)"
        mkdir -p "$(dirname "$DOCKERD_LOG")"
        # setsid: its own session, so it outlives this script and its caller's
        # process group; nohup for good measure when run from a terminal.
        # 9>&-: it must not inherit (and hold forever) this script's lock.
        setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
        pid=$!
    fi
    local waited=0
    until docker info >/dev/null 2>&1; do
        if [ "$waited" -ge 60 ]; then
            die "dockerd did not become ready within 60 s; see $DOCKERD_LOG (last line: $(tail -n 1 "$DOCKERD_LOG" 2>/dev/null))"
        fi
        # ($pid may still be setsid/nohup about to exec dockerd, or, if setsid
        # forked, gone while dockerd runs: it has died only if both are false.)
        if ! { [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; } && ! pgrep -x dockerd >/dev/null 2>&1; then
            die "dockerd exited during start-up; see $DOCKERD_LOG (last line: $(tail -n 1 "$DOCKERD_LOG" 2>/dev/null))"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "Docker engine: ready after ${waited} s ($(docker info --format '{{.ServerVersion}}'))"
}

# --- 2. host tools the tests call ------------------------------------------------------
# The end-to-end tests compare against the manual procedure with the host's psql, craft
# archives with python3, check sums with GNU sha256sum, run the tool on a terminal
# through util-linux script, and sign and verify bundles with OpenSSH's ssh-keygen and ssh-agent. A fresh machine of this kind has them; install what is missing.
ensure_host_tools() {
    local missing=()
    command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    command -v sha256sum >/dev/null 2>&1 || missing+=(coreutils)
    command -v script >/dev/null 2>&1 || missing+=(bsdutils)
    # Signed bundles: keys made, signatures checked and an agent run by OpenSSH's own tools.
    for tool in ssh ssh-keygen ssh-agent ssh-add; do
        command -v "$tool" >/dev/null 2>&1 || { missing+=(openssh-client); break; }
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

# --- 4. Mermaid's CLI -----------------------------------------------------------------
# The schema diagram test renders with Mermaid itself. Puppeteer's browser download is
# not reachable here, so the CLI drives Debian's chromium, named in a puppeteer config
# beside it (--no-sandbox: the tests run as root).
MERMAID_CLI_VERSION=11.9.0
MERMAID_DIR=${MERMAID_DIR:-/opt/netpoint-mermaid}
ensure_mermaid() {
    local start=$SECONDS
    command -v chromium >/dev/null 2>&1 || apt_install chromium
    command -v npm >/dev/null 2>&1 || apt_install npm
    local have="" manifest="$MERMAID_DIR/node_modules/@mermaid-js/mermaid-cli/package.json"
    [ ! -r "$manifest" ] || have=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$manifest" | head -n 1)
    if [ "$have" = "$MERMAID_CLI_VERSION" ] && [ -x "$MERMAID_DIR/node_modules/.bin/mmdc" ]; then
        log "mermaid-cli $have: present in $MERMAID_DIR, reusing"
    else
        log "mermaid-cli $MERMAID_CLI_VERSION: installing into $MERMAID_DIR"
        mkdir -p "$MERMAID_DIR"
        PUPPETEER_SKIP_DOWNLOAD=1 npm install --prefix "$MERMAID_DIR" --no-audit --no-fund \
            --loglevel=error "@mermaid-js/mermaid-cli@$MERMAID_CLI_VERSION" >>"$APT_LOG" 2>&1 ||
            die "npm install @mermaid-js/mermaid-cli@$MERMAID_CLI_VERSION failed; see $APT_LOG"
    fi
    printf '{"executablePath": "%s", "args": ["--no-sandbox", "--disable-gpu"]}\n' \
        "$(command -v chromium)" >"$MERMAID_DIR/puppeteer.json"
    log "mermaid-cli: ready in $((SECONDS - start)) s (NETPOINT_MERMAID_DIR=$MERMAID_DIR)"
}

# --- 3. postgres images ------------------------------------------------------------
# Identifies what an offline build of this major contains; stored in the image
# as ENV NETPOINT_PG_IMAGE_RECIPE so a changed entrypoint triggers a rebuild.
recipe_of() {
    local major=${1#ssh}
    {
        echo "recipe=$RECIPE_VERSION major=$major suite=${SUITE_OF[$major]}"
        cat "$ENTRYPOINT_SRC"
        [ "$major" = "$1" ] || { echo "ssh"; cat "$SSH_ENTRYPOINT_SRC"; }
    } | sha256sum | cut -c1-16
}

image_recipe() { # prints the recipe of an existing image ("" for a pulled one)
    docker image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$1" |
        sed -n 's/^NETPOINT_PG_IMAGE_RECIPE=//p'
}

# One build per child process (see below), so BUILD_DIR is per process.
BUILD_DIR=""
cleanup_build_dir() {
    [ -n "$BUILD_DIR" ] && [ -d "$BUILD_DIR" ] || return 0
    # debootstrap mounts /proc (and on some hosts /sys, /dev) inside the target;
    # if it died half-way they can still be there. Never rm -rf across them.
    local m
    awk -v d="$BUILD_DIR/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$BUILD_DIR" || log "warning: could not remove $BUILD_DIR"
    BUILD_DIR=""
}

# Builds postgres:<major> (or netpoint-prod-ssh:<major>) from Debian packages; runs
# in a child process.
build_image() {
    local key=$1 major=${1#ssh} mirror=$2 recipe=$3
    local suite=${SUITE_OF[$major]} image packages="postgresql-${1#ssh},util-linux"
    image=$(image_of "$key")
    # The SSH "production": OpenSSH's server, whose package makes the host keys.
    [ "$key" = "$major" ] || packages+=",openssh-server"
    local start=$SECONDS
    trap cleanup_build_dir EXIT
    trap 'cleanup_build_dir; exit 130' INT TERM

    BUILD_DIR=$(mktemp -d "/var/tmp/netpoint-pg$key.XXXXXX")
    local root="$BUILD_DIR/rootfs" dlog="$BUILD_DIR/debootstrap.log"
    log "$image: debootstrap $suite from $mirror ($packages)"
    # util-linux for setpriv (essential on bookworm, listed to be sure elsewhere).
    if ! debootstrap --variant=minbase --include="$packages" \
        "$suite" "$root" "$mirror" >"$dlog" 2>&1; then
        # Keep the log: the build dir is about to be removed.
        cp "$dlog" "/var/log/netpoint-debootstrap-$key.log" 2>/dev/null || true
        die "debootstrap of $suite for $image failed; see /var/log/netpoint-debootstrap-$key.log (last line: $(tail -n 1 "$dlog"))"
    fi
    local bootstrapped=$SECONDS
    [ -x "$root/usr/lib/postgresql/$major/bin/postgres" ] ||
        die "postgres:$major: $root/usr/lib/postgresql/$major/bin/postgres missing after debootstrap"
    chroot "$root" sh -c 'command -v setpriv' >/dev/null ||
        die "postgres:$major: setpriv missing from the $suite root file system"

    # The package's postinst creates a "main" cluster (Debian's layout, under
    # /var/lib/postgresql/$major and /etc/postgresql/$major); the image uses
    # $PGDATA instead, so drop it rather than ship an unused, initialised cluster.
    rm -rf "$root/var/lib/postgresql/$major" "$root/etc/postgresql/$major"
    # Shrink: docs, man pages, message catalogues, apt's package lists and caches,
    # logs. (The server's own files, zoneinfo, ICU data and the LLVM JIT stay,
    # as in the official image.)
    rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/usr/share/locale/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* \
        "$root"/var/cache/debconf/*-old "$root"/var/log/*
    # Docker supplies these at run time; do not ship the build host's.
    : >"$root/etc/resolv.conf"
    : >"$root/etc/hostname"

    install -m 0755 "$ENTRYPOINT_SRC" "$root/usr/local/bin/docker-entrypoint.sh"
    local entrypoint=/usr/local/bin/docker-entrypoint.sh expose=5432
    if [ "$key" != "$major" ]; then
        install -m 0755 "$SSH_ENTRYPOINT_SRC" "$root/usr/local/bin/ssh-prod-entrypoint.sh"
        entrypoint=/usr/local/bin/ssh-prod-entrypoint.sh expose=22
    fi
    mkdir -p "$root/docker-entrypoint-initdb.d" "$root/var/lib/postgresql/data" "$root/var/run/postgresql"
    # Owner by name inside the rootfs: its postgres uid need not match the host's.
    chroot "$root" chown postgres:postgres /var/lib/postgresql/data /var/run/postgresql
    chmod 0700 "$root/var/lib/postgresql/data"
    chmod 3777 "$root/var/run/postgresql" # as the official image: works with --user too

    log "$image: importing into docker"
    local old_id
    old_id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    # (Docker 20.10's import rejects STOPSIGNAL, so `docker stop` sends SIGTERM:
    # a "smart" shutdown, which waits for clients to disconnect.)
    # --numeric-owner keeps the rootfs's own uids (not the host's names).
    # dev/proc/sys are mounted by docker at run time; ship them empty.
    tar --numeric-owner -C "$root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
        docker import \
            -c "ENTRYPOINT [\"$entrypoint\"]" \
            -c 'CMD ["postgres"]' \
            -c "ENV PATH=/usr/lib/postgresql/$major/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
            -c 'ENV LANG=C.UTF-8' \
            -c "ENV PG_MAJOR=$major" \
            -c 'ENV PGDATA=/var/lib/postgresql/data' \
            -c "ENV NETPOINT_PG_IMAGE_RECIPE=$recipe" \
            -c 'VOLUME /var/lib/postgresql/data' \
            -c "EXPOSE $expose" \
            -m "offline build: debootstrap $suite + $packages" \
            - "$image" >/dev/null ||
        die "docker import of $image failed"
    # The out-of-date image it replaces is now untagged; drop it unless a
    # container still uses it.
    [ -z "$old_id" ] || docker image rm "$old_id" >/dev/null 2>&1 || true
    cleanup_build_dir
    log "$image: built in $((SECONDS - start)) s (debootstrap $((bootstrapped - start)) s)," \
        "$(docker image inspect --format '{{.Size}}' "$image" | numfmt --to=iec) uncompressed"
}

# Reuses or pulls postgres:<major>; adds it to TO_BUILD when neither works. (Our
# own netpoint-prod-ssh image is never pulled.)
ensure_image() {
    local major=$1 image have
    image=$(image_of "$1")
    RECIPE[$major]=$(recipe_of "$major")
    if [ "$REBUILD" = 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
        have=$(image_recipe "$image")
        if [ -z "$have" ] || [ "$have" = "${RECIPE[$major]}" ]; then
            log "$image: present, reusing${have:+ (offline build $have)}"
            REUSED+=("$major")
            return
        fi
        log "$image: offline build $have is out of date (now ${RECIPE[$major]}); rebuilding"
    elif [ "$REBUILD" = 0 ] && [ "$major" = "${major#ssh}" ]; then
        if timeout 30 docker pull -q "$image" >/dev/null 2>&1; then
            log "$image: pulled"
            PULLED+=("$major")
            return
        fi
        log "$image: not present and docker pull failed (no registry reachable?); building it offline"
    fi
    TO_BUILD+=("$major")
}

# Two runs at once would race on dockerd and the image tags.
exec 9>/run/netpoint-test-prereqs.lock
flock -w 900 9 || die "another scripts/test-prereqs.sh still holds /run/netpoint-test-prereqs.lock after 15 min"

START=$SECONDS
ensure_docker
ensure_host_tools
ensure_mermaid
declare -A RECIPE=()
REUSED=()
PULLED=()
TO_BUILD=()
for major in "${IMAGES[@]}"; do
    ensure_image "$major"
done

if [ ${#TO_BUILD[@]} -gt 0 ]; then
    # (`|| exit`: debian_mirror already said why, in its subshell.)
    MIRROR=$(debian_mirror) || exit 1
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    for major in "${TO_BUILD[@]}"; do
        [ -e "/usr/share/debootstrap/scripts/${SUITE_OF[${major#ssh}]}" ] ||
            die "this debootstrap does not know the suite '${SUITE_OF[${major#ssh}]}' (needed for $(image_of "$major"))"
    done
    # The builds are mostly waiting on downloads and dpkg, so run them side by side.
    build_start=$SECONDS
    declare -A CHILD=()
    trap 'kill "${CHILD[@]}" 2>/dev/null; wait; exit 130' INT TERM
    for major in "${TO_BUILD[@]}"; do
        build_image "$major" "$MIRROR" "${RECIPE[$major]}" &
        CHILD[$major]=$!
    done
    failed=()
    for major in "${TO_BUILD[@]}"; do
        wait "${CHILD[$major]}" || failed+=("$major")
    done
    trap - INT TERM
    [ ${#failed[@]} -eq 0 ] || die "could not build {${failed[*]}} (reasons above)"
fi

summary="Docker $(docker info --format '{{.ServerVersion}}') running"
images() { local key out=(); for key in "$@"; do out+=("$(image_of "$key")"); done; echo "${out[*]}"; }
[ ${#REUSED[@]} -eq 0 ] || summary+="; reused $(images "${REUSED[@]}")"
[ ${#PULLED[@]} -eq 0 ] || summary+="; pulled $(images "${PULLED[@]}")"
[ ${#TO_BUILD[@]} -eq 0 ] || summary+="; built $(images "${TO_BUILD[@]}") in $((SECONDS - build_start)) s"
log "OK: $summary (total $((SECONDS - START)) s)"
