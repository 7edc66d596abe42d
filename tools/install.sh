#!/bin/sh
# Install mailx-relay for the whole host: `make install` runs this (README, "Install").
#
# What it changes, each step recorded in $PREFIX/install-state so that tools/uninstall.sh
# undoes exactly that and nothing else:
#   $PREFIX/venv          a virtual environment of the system python3 holding the package;
#                         its commands are our own entry scripts (`python -I -S`, written by
#                         tools/entry_scripts.py), not pip's console scripts
#   $PREFIX/bin/NAME      symlinks to the venv's mail, mailx, mailq, mail-alias, sendmail
#   $PREFIX/share/man     the man pages of man/
#   $SBIN/sendmail        ours, through update-alternatives when it exists (mailq as its
#   $SBIN/mailq           slave), else plain symlinks; whatever was there before is moved
#                         to NAME.mailx-relay-backup (with dpkg-divert when a package owns
#                         it, so that package's upgrades go to the backup, not over ours)
#   $LINK_BIN/NAME        optional symlinks to $PREFIX/bin/NAME (not sendmail)
#   $UNIT_DIR/*           the systemd units (flush timer, mailx-relayd socket and service),
#                         ExecStart= pointing into $PREFIX/bin; /etc/systemd/system when
#                         it exists, else $PREFIX/share/systemd (not enabled either way)
#   $SPOOL_DIR            the system queue (0755 root) and its offline drop $OFFLINE_DIR
#                         (1733 root), created when missing; uninstall leaves them alone
# Running it again upgrades in place: the venv is rebuilt, the records are kept.
#
# Settings (environment; the Makefile passes its variables of the same names):
#   PREFIX=/opt/mailx-relay  DESTDIR=  SBIN=/usr/sbin (empty: leave it alone)
#   LINK_BIN= (e.g. /usr/local/bin)  INSTALL_PYTHON=/usr/bin/python3  PIP_ARGS=
#   ALTERNATIVES=update-alternatives (empty: plain symlink)  ALTERNATIVES_PRIORITY=50
#   UNIT_DIR= (empty: as above)  SPOOL_DIR=/var/spool/mailx-relay  OFFLINE_DIR=$SPOOL_DIR/offline
#   ALTDIR, ALT_ADMINDIR, ALT_LOG, DPKG_ADMINDIR: the dpkg databases (tests point them
#   into a scratch directory so that they never touch the real ones).
# With DESTDIR (staging for a package) the files go under DESTDIR with their final paths
# inside, and neither alternatives nor diversions are touched: a package's postinst does that.
set -eu

NAMES="mail mailx mailq mail-alias sendmail mailx-relayd"
LINK_NAMES="mail mailx mailq mail-alias"
SBIN_NAMES="sendmail mailq"
BACKUP_SUFFIX=.mailx-relay-backup

PREFIX=${PREFIX:-/opt/mailx-relay}
DESTDIR=${DESTDIR:-}
SBIN=${SBIN-/usr/sbin}
LINK_BIN=${LINK_BIN:-}
INSTALL_PYTHON=${INSTALL_PYTHON:-python3}
PIP_ARGS=${PIP_ARGS:-}
ALTERNATIVES=${ALTERNATIVES-update-alternatives}
ALTERNATIVES_PRIORITY=${ALTERNATIVES_PRIORITY:-50}
ALTDIR=${ALTDIR:-/etc/alternatives}
ALT_ADMINDIR=${ALT_ADMINDIR:-/var/lib/dpkg/alternatives}
ALT_LOG=${ALT_LOG:-/var/log/alternatives.log}
DPKG_ADMINDIR=${DPKG_ADMINDIR:-/var/lib/dpkg}
UNIT_DIR=${UNIT_DIR:-}
SPOOL_DIR=${SPOOL_DIR:-/var/spool/mailx-relay}
OFFLINE_DIR=${OFFLINE_DIR:-$SPOOL_DIR/offline}

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${DESTDIR%/}
STATE=$ROOT$PREFIX/install-state
TAB=$(printf '\t')

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

case $PREFIX in /*) ;; *) die "PREFIX must be an absolute path, not '$PREFIX'" ;; esac
case $SBIN in /*|'') ;; *) die "SBIN must be an absolute path or empty, not '$SBIN'" ;; esac
case $LINK_BIN in /*|'') ;; *) die "LINK_BIN must be an absolute path, not '$LINK_BIN'" ;; esac
case $UNIT_DIR in /*|'') ;; *) die "UNIT_DIR must be an absolute path, not '$UNIT_DIR'" ;; esac
case $SPOOL_DIR$OFFLINE_DIR in /*/*) ;; *) die "SPOOL_DIR and OFFLINE_DIR must be absolute paths" ;; esac
if [ -z "$UNIT_DIR" ]; then
    if [ -d "$ROOT/etc/systemd/system" ]; then
        UNIT_DIR=/etc/systemd/system
    else
        UNIT_DIR=$PREFIX/share/systemd
    fi
fi
UNITS="mailx-relay-flush.service mailx-relay-flush.timer mailx-relayd.socket mailx-relayd.service"

# One line per change, final paths (without DESTDIR), tab-separated; kept on re-install.
# Parents of PREFIX that had to be created wait in $pending until PREFIX exists.
pending=
record() {
    line=$(printf '%s\t' "$@")
    line=${line%"$TAB"}
    if [ ! -d "$ROOT$PREFIX" ]; then
        pending="$pending$line
"
        return 0
    fi
    printf '%s%s\n' "$pending" "$line" | while IFS= read -r entry; do
        if ! grep -qxF -- "$entry" "$STATE" 2>/dev/null; then
            printf '%s\n' "$entry" >>"$STATE"
        fi
    done
    pending=
}

recorded() {  # recorded KIND PATH: was PATH created by an earlier install?
    [ -f "$STATE" ] && awk -F '\t' -v k="$1" -v p="$2" \
        '$1 == k && $2 == p { found = 1 } END { exit !found }' "$STATE"
}

# mkdir -p that records each directory it creates, outermost first.
make_dirs() {
    [ -d "$ROOT$1" ] && return 0
    make_dirs "$(dirname "$1")"
    mkdir "$ROOT$1"
    chmod 755 "$ROOT$1"
    record dir "$1"
}

# ---------------------------------------------------------------- checks, before any change
"$INSTALL_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "$INSTALL_PYTHON: Python 3.11 or later is needed (set INSTALL_PYTHON=...)"
"$INSTALL_PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
    || die "$INSTALL_PYTHON cannot create a virtual environment: apt-get install python3-venv"

reinstall=no
if [ -f "$STATE" ]; then
    reinstall=yes
else
    for name in $NAMES; do
        if [ -e "$ROOT$PREFIX/bin/$name" ] || [ -L "$ROOT$PREFIX/bin/$name" ]; then
            die "$ROOT$PREFIX/bin/$name exists and was not installed by this script; choose another PREFIX"
        fi
    done
    [ ! -e "$ROOT$PREFIX/venv" ] \
        || die "$ROOT$PREFIX/venv exists and was not installed by this script; choose another PREFIX"
fi
for page in "$SRC"/man/*.[1-9]; do
    [ -f "$page" ] || continue
    section=${page##*.}
    dest=$PREFIX/share/man/man$section/$(basename "$page")
    if [ -e "$ROOT$dest" ] && ! recorded file "$dest"; then
        die "$ROOT$dest exists and was not installed by this script; choose another PREFIX"
    fi
done
for unit in $UNITS; do
    if [ -e "$ROOT$UNIT_DIR/$unit" ] && ! recorded file "$UNIT_DIR/$unit"; then
        die "$ROOT$UNIT_DIR/$unit exists and was not installed by this script; remove it or set UNIT_DIR"
    fi
done
if [ -n "$SBIN" ] && [ -z "$ROOT" ] && [ "$reinstall" = no ]; then
    for name in $SBIN_NAMES; do
        if [ -e "$SBIN/$name$BACKUP_SUFFIX" ] || [ -L "$SBIN/$name$BACKUP_SUFFIX" ]; then
            die "$SBIN/$name$BACKUP_SUFFIX exists already: an earlier install not uninstalled? Move it back or away first"
        fi
    done
fi
if [ -n "$LINK_BIN" ]; then
    for name in $LINK_NAMES; do
        link=$ROOT$LINK_BIN/$name
        if [ -e "$link" ] || [ -L "$link" ]; then
            [ "$(readlink "$link")" = "$PREFIX/bin/$name" ] \
                || die "$link exists and is not ours; remove it or leave LINK_BIN empty"
        fi
    done
fi

# ---------------------------------------------------------------- the venv and the package
make_dirs "$PREFIX"
record file "$PREFIX/install-state"
if [ "$reinstall" = yes ]; then
    say "upgrading the installation in $ROOT$PREFIX"
fi
if [ ! -d "$ROOT$PREFIX/venv" ]; then
    record tree "$PREFIX/venv"
fi
say "creating $ROOT$PREFIX/venv with $INSTALL_PYTHON"
"$INSTALL_PYTHON" -m venv --clear "$ROOT$PREFIX/venv"

# Build from a copy, so a root install leaves no root-owned build/ or *.egg-info behind
# in the (maybe a user's) source tree.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/src"
(cd "$SRC" && tar -cf - --exclude=.venv --exclude=.git --exclude=build \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.mypy_cache \
    --exclude=.pytest_cache --exclude=.ruff_cache --exclude=.hypothesis .) \
    | (cd "$work/src" && tar -xf -)
say "pip install . (from $SRC)"
# shellcheck disable=SC2086  # PIP_ARGS is a list of words
"$ROOT$PREFIX/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    $PIP_ARGS "$work/src"
if [ -n "$ROOT" ]; then
    # Scripts name their interpreter by absolute path: make it the final one.
    for script in "$ROOT$PREFIX/venv/bin/"* "$ROOT$PREFIX/venv/pyvenv.cfg"; do
        if [ -f "$script" ] && [ ! -L "$script" ] && grep -Iq "$ROOT$PREFIX" "$script"; then
            sed -i "s|$ROOT$PREFIX|$PREFIX|g" "$script"
        fi
    done
fi

# Our own entry scripts in place of pip's console scripts (same names, same entry points,
# read from the installed package): `#!python -IS`, site-packages put on sys.path by the
# script, every module byte-compiled; why, in tools/entry_scripts.py and README, Install.
"$ROOT$PREFIX/venv/bin/python" -I "$SRC/tools/entry_scripts.py" \
    --venv "$ROOT$PREFIX/venv" --final "$PREFIX/venv" --expect "$NAMES" >/dev/null \
    || die "could not write the commands' entry scripts into $ROOT$PREFIX/venv/bin"
if [ -z "$ROOT" ]; then  # staged scripts name paths that do not exist yet
    "$PREFIX/venv/bin/sendmail" -V >/dev/null \
        || die "$PREFIX/venv/bin/sendmail -V failed: the entry scripts do not run"
fi

# ---------------------------------------------------------------- commands and man pages
make_dirs "$PREFIX/bin"
for name in $NAMES; do
    [ -x "$ROOT$PREFIX/venv/bin/$name" ] || die "the package installed no '$name' command"
    link=$ROOT$PREFIX/bin/$name
    if [ ! -L "$link" ] || [ "$(readlink "$link")" != "../venv/bin/$name" ]; then
        ln -s "../venv/bin/$name" "$link"
    fi
    record link "$PREFIX/bin/$name" "../venv/bin/$name"
done
for page in "$SRC"/man/*.[1-9]; do
    [ -f "$page" ] || continue
    section=${page##*.}
    make_dirs "$PREFIX/share/man/man$section"
    dest=$PREFIX/share/man/man$section/$(basename "$page")
    cp "$page" "$ROOT$dest"
    chmod 644 "$ROOT$dest"
    record file "$dest"
done
say "commands in $ROOT$PREFIX/bin, man pages in $ROOT$PREFIX/share/man"

if [ -n "$LINK_BIN" ]; then
    make_dirs "$LINK_BIN"
    for name in $LINK_NAMES; do
        [ -L "$ROOT$LINK_BIN/$name" ] || ln -s "$PREFIX/bin/$name" "$ROOT$LINK_BIN/$name"
        record link "$LINK_BIN/$name" "$PREFIX/bin/$name"
    done
    say "linked $LINK_NAMES into $ROOT$LINK_BIN"
fi

# ---------------------------------------------------------------- systemd units and the spool
# The units name the commands by absolute path: systemd's search path could find another
# MTA's mailq (or none), and pip's mailx-relayd is not ours.
make_dirs "$UNIT_DIR"
for unit in $UNITS; do
    sed -e "s|^ExecStart=mailq |ExecStart=$PREFIX/bin/mailq |" \
        -e "s|^ExecStart=mailx-relayd\$|ExecStart=$PREFIX/bin/mailx-relayd|" \
        -e "s|^ReadWritePaths=/var/spool/mailx-relay\$|ReadWritePaths=$SPOOL_DIR|" \
        "$SRC/etc/systemd/$unit" >"$ROOT$UNIT_DIR/$unit"
    chmod 644 "$ROOT$UNIT_DIR/$unit"
    record file "$UNIT_DIR/$unit"
done
if [ "$UNIT_DIR" != "$PREFIX/share/systemd" ]; then
    say "systemd units in $ROOT$UNIT_DIR; enable with: systemctl daemon-reload && systemctl enable --now mailx-relayd.socket mailx-relay-flush.timer"
else
    say "systemd units in $ROOT$UNIT_DIR (see README, Install); without systemd, start the service with: $PREFIX/bin/mailx-relayd &"
fi

# The system queue, and the offline drop inside it: every user may leave a file there
# (sticky, not listable), so the queue directory must be searchable by them.
if [ ! -d "$ROOT$SPOOL_DIR" ]; then
    mkdir -p "$ROOT$SPOOL_DIR"
    chmod 755 "$ROOT$SPOOL_DIR"
    say "created the system queue $ROOT$SPOOL_DIR"
elif [ -n "$(find "$ROOT$SPOOL_DIR" -maxdepth 0 ! -perm -o+x)" ]; then
    chmod go+x "$ROOT$SPOOL_DIR"
    say "made $ROOT$SPOOL_DIR searchable by every user (for the offline drop inside)"
fi
if [ ! -d "$ROOT$OFFLINE_DIR" ]; then
    mkdir -p "$ROOT$OFFLINE_DIR"
fi
chmod 1733 "$ROOT$OFFLINE_DIR"
if [ "$(id -u)" = 0 ]; then
    chown 0:0 "$ROOT$SPOOL_DIR" "$ROOT$OFFLINE_DIR"
fi
record spool "$SPOOL_DIR" "$OFFLINE_DIR"
say "offline drop $ROOT$OFFLINE_DIR (mode 1733)"

# ---------------------------------------------------------------- sendmail and mailq in SBIN
[ -n "$SBIN" ] || { say "SBIN is empty: /usr/sbin/sendmail left alone"; exit 0; }
exists() { [ -e "$1" ] || [ -L "$1" ]; }

if [ -n "$ROOT" ]; then
    make_dirs "$SBIN"
    for name in $SBIN_NAMES; do
        link=$SBIN/$name
        target=$PREFIX/bin/$name
        if exists "$ROOT$link"; then
            [ "$(readlink "$ROOT$link")" = "$target" ] \
                || die "$ROOT$link exists; stage into an empty DESTDIR"
        else
            ln -s "$target" "$ROOT$link"
        fi
        record link "$link" "$target"
    done
    exit 0
fi

describe() {  # what is at $1, in words, for the state file and the messages
    if [ -L "$1" ]; then
        printf 'symlink to %s' "$(readlink "$1")"
    else
        printf 'file sha256=%s' "$(sha256sum <"$1" | cut -d' ' -f1)"
    fi
}

target=$PREFIX/bin/sendmail
current=$(readlink "$SBIN/sendmail" 2>/dev/null || true)
if [ "$current" = "$target" ] || { [ "$current" = "$ALTDIR/sendmail" ] \
        && [ "$(readlink "$ALTDIR/sendmail")" = "$target" ]; }; then
    say "$SBIN/sendmail is already ours"
    exit 0
fi

# The MTA's mailq goes too: ssmtp's says "Mail queue is empty" whatever our queue holds.
for name in $SBIN_NAMES; do
    link=$SBIN/$name
    backup=$link$BACKUP_SUFFIX
    exists "$link" || continue
    case $(readlink "$link" 2>/dev/null || true) in
        "$ALTDIR"/*) continue ;;  # managed by update-alternatives: ours joins the group
    esac
    exists "$backup" && die "$backup exists already: move it away first (an earlier install not uninstalled?)"
    what=$(describe "$link")
    owner=$(dpkg-query --admindir="$DPKG_ADMINDIR" -S "$link" 2>/dev/null | cut -d: -f1 || true)
    if [ -n "$owner" ] && command -v dpkg-divert >/dev/null 2>&1; then
        dpkg-divert --admindir "$DPKG_ADMINDIR" --quiet --local --rename \
            --divert "$backup" --add "$link"
        record divert "$link" "$backup" "$what, from package $owner"
        say "moved $link ($what, from package $owner) to $backup (dpkg-divert)"
    else
        mv "$link" "$backup"
        record backup "$link" "$backup" "$what"
        say "moved $link ($what) to $backup"
    fi
done

if [ -n "$ALTERNATIVES" ] && command -v "$ALTERNATIVES" >/dev/null 2>&1; then
    alt() {
        "$ALTERNATIVES" --altdir "$ALTDIR" --admindir "$ALT_ADMINDIR" --log "$ALT_LOG" "$@"
    }
    before=$(alt --query sendmail 2>/dev/null || true)
    status=$(printf '%s\n' "$before" | sed -n 's/^Status: //p')
    value=$(printf '%s\n' "$before" | sed -n 's/^Value: //p')
    alt --quiet --install "$SBIN/sendmail" sendmail "$target" "$ALTERNATIVES_PRIORITY" \
        --slave "$SBIN/mailq" mailq "$PREFIX/bin/mailq"
    alt --quiet --set sendmail "$target"
    record alternative sendmail "$SBIN/sendmail" "$target" "${status:-none}" "${value:-none}"
    say "$SBIN/sendmail and $SBIN/mailq -> $ALTDIR -> $PREFIX/bin ($ALTERNATIVES)"
else
    for name in $SBIN_NAMES; do
        ln -s "$PREFIX/bin/$name" "$SBIN/$name"
        record link "$SBIN/$name" "$PREFIX/bin/$name"
    done
    say "$SBIN/sendmail and $SBIN/mailq -> $PREFIX/bin"
fi
