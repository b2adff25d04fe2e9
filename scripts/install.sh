#!/bin/sh
# Installs cachefs as a service:  scripts/install.sh [--uninstall]
#
#   PREFIX      where the binary goes ($PREFIX/bin/cachefs); /usr/local
#   DESTDIR     a staging root prefixed to every path (packaging, tests);
#               paths written into the installed files omit it
#   UNITDIR     systemd units; /etc/systemd/system
#   SBINDIR     where mount(8) looks for mount.fuse.cachefs; /sbin
#   CACHEFS_BIN a prebuilt binary to install instead of building one
#
# Installs: the binary; mount.fuse.cachefs (a symlink to it, so that
# `mount -t fuse.cachefs` and fstab lines work); cachefs@.service;
# /etc/cachefs/example.toml; /var/lib/cachefs (mode 0700, root's: backing
# dirs hold every cached value). --uninstall removes what it installed and
# keeps configs and cached data.
set -eu

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
UNITDIR=${UNITDIR:-/etc/systemd/system}
SBINDIR=${SBINDIR:-/sbin}
repo=$(cd "$(dirname "$0")/.." && pwd)

bin=$PREFIX/bin/cachefs
helper=$SBINDIR/mount.fuse.cachefs
unit=$UNITDIR/cachefs@.service
example=/etc/cachefs/example.toml

say() { printf '%s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

reload_systemd() {
    # Only on the live system, and only where systemd runs.
    if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
}

if [ "${1:-}" = "--uninstall" ]; then
    for f in "$bin" "$helper" "$unit" "$example"; do
        if [ -e "$DESTDIR$f" ] || [ -L "$DESTDIR$f" ]; then
            rm -f "$DESTDIR$f"
            say "removed $DESTDIR$f"
        fi
    done
    reload_systemd
    say "kept /etc/cachefs (configs) and /var/lib/cachefs (cached data); remove them by hand if wanted"
    exit 0
elif [ $# -gt 0 ]; then
    die "unknown argument $1 (usage: scripts/install.sh [--uninstall])"
fi

if [ -n "${CACHEFS_BIN:-}" ]; then
    built=$CACHEFS_BIN
else
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) or set CACHEFS_BIN"
    (cd "$repo" && cargo build --release --locked)
    built=$repo/target/release/cachefs
fi
[ -x "$built" ] || die "$built is not an executable"

install -d -m 0755 "$DESTDIR$PREFIX/bin" "$DESTDIR$SBINDIR" "$DESTDIR$UNITDIR" "$DESTDIR/etc/cachefs"
install -m 0755 "$built" "$DESTDIR$bin"
ln -sfn "$bin" "$DESTDIR$helper"
sed "s|@BINDIR@|$PREFIX/bin|g" "$repo/systemd/cachefs@.service" >"$DESTDIR$unit.tmp"
chmod 0644 "$DESTDIR$unit.tmp"
mv "$DESTDIR$unit.tmp" "$DESTDIR$unit"
install -m 0644 "$repo/systemd/example.toml" "$DESTDIR$example"
# The backing dirs' parent: root's and private, whatever umask is in force.
install -d -m 0700 "$DESTDIR/var/lib/cachefs"
chmod 0700 "$DESTDIR/var/lib/cachefs"
if [ "$(id -u)" = 0 ]; then
    chown root:root "$DESTDIR/var/lib/cachefs"
fi
reload_systemd

say "installed $DESTDIR$bin"
say "installed $DESTDIR$helper -> $bin"
say "installed $DESTDIR$unit"
say "installed $DESTDIR$example"
say "created   $DESTDIR/var/lib/cachefs (0700)"
say "next: cp $example /etc/cachefs/NAME.toml && systemctl enable --now cachefs@NAME"
