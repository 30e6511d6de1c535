#!/usr/bin/env bash
# Install, on Debian as root, the database servers that the test suite starts
# privately (tests/servers): redis-server (+ redis-cli; Sentinel mode is built
# into redis-server), the PostgreSQL server binaries, and the MariaDB server;
# and Chromium, for the one browser test.
#
# Only what is missing is installed; `apt-get update` runs once, and only if
# something is missing, so on a machine that has them all this is a no-op.
# It never starts or stops a system service: while installing, a
# policy-rc.d answering 101 ("not allowed") keeps the packages' scripts from
# starting theirs, and PostgreSQL is told not to create its main cluster.
# The tests never use those system servers anyway.
#
# SHOAL_INSTALL_DRY_RUN=1: say what is missing and simulate the install
# (apt-get -s), changing nothing.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
dry_run="${SHOAL_INSTALL_DRY_RUN:-0}"

# An executable file on PATH or in the sbin dirs (a non-root PATH may lack
# them). `command -v` alone also names files that are not executable.
have() {
    local path
    for path in "$(command -v "$1" 2>/dev/null || true)" "/usr/sbin/$1" "/usr/local/sbin/$1"; do
        if [ -n "$path" ] && [ -f "$path" ] && [ -x "$path" ]; then
            return 0
        fi
    done
    return 1
}

missing=()

# Redis: the redis-server package depends on redis-tools (redis-cli).
if ! have redis-server; then
    missing+=(redis-server)
elif ! have redis-cli; then
    missing+=(redis-tools)
fi

# PostgreSQL: initdb, pg_ctl and postgres in one /usr/lib/postgresql/*/bin,
# and (we run as root) the postgres user the package creates.
postgres_found=false
for bindir in /usr/lib/postgresql/*/bin; do
    if [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ] && [ -x "$bindir/postgres" ]; then
        postgres_found=true
    fi
done
if ! $postgres_found || ! id postgres >/dev/null 2>&1; then
    missing+=(postgresql)
fi

# MariaDB: the server and the datadir installer.
if ! { have mariadbd || have mysqld; } || ! { have mariadb-install-db || have mysql_install_db; }; then
    missing+=(mariadb-server)
fi

# Chromium for the browser test of `shoal demo` (tests/cli/test_demo_browser.py):
# Playwright drives Debian's build; `playwright install` is never run.
if [ ! -x /usr/bin/chromium ]; then
    missing+=(chromium)
fi

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-servers: redis-server, postgresql, mariadb-server and chromium are all present"
    exit 0
fi
echo "install-servers: installing ${missing[*]}"

if [ "$dry_run" = 1 ]; then
    echo "install-servers: dry run: would run apt-get update, then:"
    apt-get install -s -q --no-install-recommends "${missing[@]}" | grep -E '^Inst ' || true
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "install-servers: must run as root to install ${missing[*]}" >&2
    exit 1
fi

cleanup=()
on_exit() {
    for path in ${cleanup[@]+"${cleanup[@]}"}; do
        rm -f "$path"
    done
}
trap on_exit EXIT

# Keep the packages' maintainer scripts from starting their services
# (invoke-rc.d and deb-systemd-invoke both ask policy-rc.d).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    cleanup+=(/usr/sbin/policy-rc.d)
fi

# Keep postgresql-common from creating (and starting) a "main" cluster.
dropin=/etc/postgresql-common/createcluster.d/shoal-no-main-cluster.conf
if [[ " ${missing[*]} " == *" postgresql "* ]] && [ ! -e "$dropin" ]; then
    mkdir -p "$(dirname "$dropin")"
    echo "create_main_cluster = false" >"$dropin"
    cleanup+=("$dropin")
fi

apt-get update -q
apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}"
echo "install-servers: done"
