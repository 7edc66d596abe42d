#!/bin/sh
# Undo tools/install.sh: `make uninstall` runs this (README, "Uninstall").
#
# Reads $PREFIX/install-state and undoes each recorded change, last first (the systemd units
# go; the system queue and its offline drop stay, with a count of what they hold): the sendmail
# alternative (with its mailq slave) or links go, what was in $SBIN/sendmail and
# $SBIN/mailq before comes back (from the backup, or by removing the dpkg diversion), the links, man pages and venv go, and the
# directories install created are removed when empty. Nothing else is touched: a path that
# changed since the install (a link pointing elsewhere, a file in the way) is left, with a
# warning. Safe to run again after an interruption.
#
# Settings: PREFIX, DESTDIR, ALTERNATIVES, ALTDIR, ALT_ADMINDIR, ALT_LOG, DPKG_ADMINDIR,
# as for install.sh; they must match the ones the install used. SPOOL (default
# /var/spool/mailx-relay): the system queue, never removed; we say what it still holds.
set -eu

PREFIX=${PREFIX:-/opt/mailx-relay}
DESTDIR=${DESTDIR:-}
ALTERNATIVES=${ALTERNATIVES-update-alternatives}
ALTDIR=${ALTDIR:-/etc/alternatives}
ALT_ADMINDIR=${ALT_ADMINDIR:-/var/lib/dpkg/alternatives}
ALT_LOG=${ALT_LOG:-/var/log/alternatives.log}
DPKG_ADMINDIR=${DPKG_ADMINDIR:-/var/lib/dpkg}
SPOOL=${SPOOL:-/var/spool/mailx-relay}

ROOT=${DESTDIR%/}
STATE=$ROOT$PREFIX/install-state
warnings=0

say() { printf 'uninstall: %s\n' "$*"; }
warn() { printf 'uninstall: warning: %s\n' "$*" >&2; warnings=$((warnings + 1)); }
die() { printf 'uninstall: error: %s\n' "$*" >&2; exit 1; }
exists() { [ -e "$1" ] || [ -L "$1" ]; }
alt() { "$ALTERNATIVES" --altdir "$ALTDIR" --admindir "$ALT_ADMINDIR" --log "$ALT_LOG" "$@"; }

[ -f "$STATE" ] || die "$STATE not found: nothing was installed with PREFIX=$PREFIX${DESTDIR:+ DESTDIR=$DESTDIR}"

undo_alternative() {  # name link target previous-status previous-value
    if ! command -v "$ALTERNATIVES" >/dev/null 2>&1; then
        warn "$ALTERNATIVES not found: cannot remove the $1 alternative $3"
        return
    fi
    if alt --list "$1" 2>/dev/null | grep -qxF -- "$3"; then
        alt --quiet --remove "$1" "$3"
    fi
    if alt --query "$1" >/dev/null 2>&1; then  # the group has other members
        if [ "$4" = manual ] && alt --list "$1" | grep -qxF -- "$5"; then
            alt --quiet --set "$1" "$5"
        elif [ "$4" = auto ]; then
            alt --quiet --auto "$1"
        fi
    fi
    say "removed the $1 alternative $3"
}

undo_backup() {  # link backup what
    if ! exists "$ROOT$2"; then
        exists "$ROOT$1" || warn "$ROOT$2 is gone: nothing to put back in $ROOT$1 ($3)"
        return
    fi
    if exists "$ROOT$1"; then
        warn "$ROOT$1 exists (not ours): left it, and the old one in $ROOT$2 ($3)"
        return
    fi
    mv "$ROOT$2" "$ROOT$1"
    say "restored $ROOT$1 ($3)"
}

undo_divert() {  # link backup what
    if exists "$1"; then
        warn "$1 exists (not ours): left it, and the diverted one in $2 ($3)"
        return
    fi
    if dpkg-divert --admindir "$DPKG_ADMINDIR" --list "$1" | grep -q .; then
        dpkg-divert --admindir "$DPKG_ADMINDIR" --quiet --local --rename --divert "$2" --remove "$1"
        say "restored $1 ($3; dpkg diversion removed)"
    fi
}

undo_link() {  # path target
    if [ -L "$ROOT$1" ]; then
        if [ "$(readlink "$ROOT$1")" = "$2" ]; then
            rm -f "$ROOT$1"
        else
            warn "$ROOT$1 now points to $(readlink "$ROOT$1"), not $2: left it"
        fi
    elif [ -e "$ROOT$1" ]; then
        warn "$ROOT$1 is no longer our symlink: left it"
    fi
}

report_spool() {  # spool offline: left alone, but say what it still holds
    queued=$(find "$ROOT$1/new" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    dropped=$(find "$ROOT$2" -mindepth 1 -maxdepth 1 -name 'msg.*' 2>/dev/null | wc -l)
    total=$((queued + dropped))
    say "left the system queue $ROOT$1 alone: it still holds $total entries ($queued queued, $dropped in the offline drop); deliver them first (mailq --flush, before uninstalling) or remove it by hand"
}

undo_dir() {  # path
    [ -d "$ROOT$1" ] || return 0
    if ! rmdir "$ROOT$1" 2>/dev/null; then
        warn "$ROOT$1 is not empty (something was added since the install): left it"
    fi
}

# Read all records first, last first: the state file itself is one of them.
reversed=$(mktemp)
trap 'rm -f "$reversed"' EXIT
awk '{ line[NR] = $0 } END { for (i = NR; i > 0; i--) print line[i] }' "$STATE" >"$reversed"
TAB=$(printf '\t')
while IFS=$TAB read -r kind a b c d e; do
    case $kind in
        alternative) undo_alternative "$a" "$b" "$c" "$d" "$e" ;;
        backup) undo_backup "$a" "$b" "$c" ;;
        divert) undo_divert "$a" "$b" "$c" ;;
        link) undo_link "$a" "$b" ;;
        file) rm -f "$ROOT$a" ;;
        tree) rm -rf "$ROOT$a" ;;
        dir) undo_dir "$a" ;;
        spool) report_spool "$a" "$b" ;;
        '') ;;
        *) warn "unknown record '$kind' in $STATE: skipped" ;;
    esac
done <"$reversed"
# The spool holds users' mail: never removed here, but never silently left either.
count() {  # directory [name prefix]: entries in it (dot files, unfinished writes, not counted)
    [ -d "$1" ] || { echo 0; return; }
    ls "$1" 2>/dev/null | grep -c "^${2:-}" || true
}
if [ -d "$ROOT$SPOOL" ]; then
    queued=$(count "$ROOT$SPOOL/new")
    dead=$(count "$ROOT$SPOOL/dead")
    offline=$(count "$ROOT$SPOOL/offline" "msg\.")
    total=$((queued + dead + offline))
    if [ "$total" -gt 0 ]; then
        say "left the spool $ROOT$SPOOL alone: it still holds $queued queued message(s), $dead in dead/ and $offline in offline/ (flush or read them, then remove it by hand)"
    else
        say "left the spool $ROOT$SPOOL alone: it holds no message (remove it by hand)"
    fi
fi
if [ "$warnings" -gt 0 ]; then
    die "$warnings path(s) left as found (see the warnings above); the rest is removed"
fi
say "removed mailx-relay from $ROOT$PREFIX"
