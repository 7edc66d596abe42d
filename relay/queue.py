"""The durable queue: a spool of messages waiting for the mailhub, their locks and back-off.

Layout (`QueueDir`, 0700, owned by the user running the relay, never a symlink):

    tmp/<id>/        an entry being written, or one being removed (`<id>.done`)
    new/<id>/        committed entries, in queue order (ids sort by time)
        message      the prepared message (headers fixed up, Bcc removed), as stored
        meta.json    the sidecar: envelope, queued at, attempts, next try, last error
    corrupt/<id>     entries that could not be read, kept for a human to look at
    flush.json       how the last flush ended (advisory, for `mailq`)

Commit protocol of `enqueue` (qmail's "what if we are killed here?" answered per step):
1. mkdir `tmp/<id>` (O_EXCL semantics: `<id>` is time + pid + random, and mkdir fails
   rather than reuse a name);
2. write `message`, fsync it; write `meta.json` (its recorded size is checked on every
   read, Postfix's "a queue file must end with its END record"), fsync it;
3. fsync `tmp/<id>` so both names survive a power cut;
4. rename `tmp/<id>` to `new/<id>`: **the commit point**; one atomic directory rename, so a
   crash before it leaves only junk in tmp/ (removed later), a crash after it a whole
   entry; no reader ever looks in tmp/;
5. fsync `new/`; only then does `enqueue` return and the caller may exit 0.

Removal after delivery renames `new/<id>` to `tmp/<id>.done` (atomic), fsyncs `new/`, and
then deletes the files: a crash can never leave half an entry in `new/`. A flush batches
the fsync and deletes the files after its session (`Removals`: a power cut may then repeat
a few deliveries, never lose one). The sidecar is
updated by writing `meta.json.new`, fsync, rename over `meta.json`, fsync of the entry.

Locking: `flock` on the entry's `message` file, taken without waiting, held for the whole
delivery, re-checked after it is granted (the entry may have been removed meanwhile).
flock belongs to the open file, so it also excludes threads of one process, and it
vanishes with the process: no lock file survives a SIGKILL (docs/architecture.md, "Queue").

Back-off (`QueueBackoff=FIRST,MAX`): after the n-th failed attempt the entry waits
min(FIRST * 2**(n-1), MAX) seconds, but only when the failure was the message's own (a
4xx to its MAIL, RCPT or DATA, or a session lost in its DATA); when the mailhub cannot
be reached at all, the entry stays due, since the next run costs one connection attempt
and the entry is not at fault.

Deliberately light: importing this module loads neither `email`, `ssl` nor `smtplib`,
so `mailq` on an empty queue stays fast.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from relay import replies
from relay.errors import CantCreateError, IOFailure, RelayError
from relay.records import Record

# Annotations only: `typing`, `collections.abc` and `types` cost `mailq` on an empty queue
# a good part of its start-up (docs/architecture.md, "Start-up time"); mypy takes this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence
    from types import TracebackType
    from typing import Any, Self

    from relay.message import Spooled

SYSTEM_QUEUE_DIR = "/var/spool/mailx-relay"
FORMAT_VERSION = 1
MESSAGE = "message"
META = "meta.json"
STATUS = "flush.json"
#: An unfinished write in tmp/ untouched for this long belongs to a dead writer.
TMP_MAX_AGE = 3600.0
#: The steps of one message's own transaction (names used by relay.smtp).
MESSAGE_STEPS = replies.MESSAGE_STEPS

#: Files of the offline drop that relay.pickup moved into corrupt/, never sent.
SET_ASIDE_PREFIX = "offline."
SET_ASIDE_REASON = "an offline drop file the pickup set aside (reported by that flush); never sent"

#: Removed entries' trees (`tmp/<id>.done`) deleted per fsync of new/ by `sweep_tmp`.
_DONE_PER_SYNC = 1000
#: Names read per pass over a directory by `sorted_names` (at most twice this many held).
NAMES_PER_PASS = 8192
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Errors that mean "the disk said no" rather than "we may not create here".
_IO_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})


def is_entry_name(name: str) -> bool:
    """Whether `name` has the form of `new_id`: 14 digits, 6 digits, a pid, 6 hex digits,
    joined by dots (the regular expression `[0-9]{14}\\.[0-9]{6}\\.[0-9]+\\.[0-9a-f]{6}`).

    Hand-rolled rather than `re`: importing `re` costs `mailq` on an empty queue more than
    the rest of this module (docs/architecture.md, "Start-up time"). Tested against the
    expression (tests/relay/test_queue_names.py, hypothesis). `str.isdigit` alone would accept other
    scripts' digits, hence the explicit sets.
    """
    parts = name.split(".")
    if len(parts) != 4:
        return False
    stamp, micros, pid, rand = parts
    return (
        len(stamp) == 14
        and len(micros) == 6
        and len(rand) == 6
        and pid != ""
        and not (stamp + micros + pid).strip(_DIGITS)
        and not rand.strip(_HEX)
    )


_DIGITS = "0123456789"
_HEX = "0123456789abcdef"


def sorted_names(
    dir_fd: int, *, per_pass: int = NAMES_PER_PASS, snapshot: bool = False
) -> Iterator[str]:
    """The names in a directory in sorted order, holding at most 2 x `per_pass` of them.

    Why not `sorted(os.listdir())`: 100,000 queued entries are 10 MiB of `str` held for
    the whole listing or flush, where the work needs one entry at a time. So: passes over
    the directory (os.scandir streams it), each keeping the `per_pass` smallest names
    above the last one yielded (the candidates are sorted and cut back to `per_pass`
    whenever they reach twice that). The directory shrinks as a flush removes entries,
    so its later passes are short; a listing of N entries reads N x N / `per_pass` names
    in all, about a second at 100,000.

    The directory may change meanwhile: a name is never yielded twice, and a name that
    is there from the start to the end is yielded once. With `snapshot`, names above the
    greatest one of the first pass (entries committed after it began: ids sort by time)
    are left out, so a flush does not chase a queue that keeps filling.
    """
    low: str | None = None
    high: str | None = None
    first = True
    while True:
        batch: list[str] = []
        bound = high
        top = ""
        with os.scandir(dir_fd) as entries:
            for found in entries:
                name = found.name
                if first and name > top:
                    top = name
                if (low is not None and name <= low) or (bound is not None and name > bound):
                    continue
                batch.append(name)
                if len(batch) >= 2 * per_pass:
                    batch.sort()
                    del batch[per_pass:]
                    bound = batch[-1]
        batch.sort()
        del batch[per_pass:]
        if first and snapshot:
            high = top
        first = False
        yield from batch
        if len(batch) < per_pass:
            return
        low = batch[-1]


def default_dir(environ: Mapping[str, str] | None = None, euid: int | None = None) -> str:
    """/var/spool/mailx-relay for root, else $XDG_STATE_HOME/mailx-relay/queue."""
    env = os.environ if environ is None else environ
    if (os.geteuid() if euid is None else euid) == 0:
        return SYSTEM_QUEUE_DIR
    state = env.get("XDG_STATE_HOME") or ""
    if not os.path.isabs(state):  # the XDG spec: a relative value is to be ignored
        home = env.get("HOME") or os.path.expanduser("~")
        state = os.path.join(home, ".local", "state")
    return os.path.join(state, "mailx-relay", "queue")


def queue_dir(configured: str | None, environ: Mapping[str, str] | None = None) -> str:
    """`QueueDir` (a leading ~ is the user's home, so one config serves every user)."""
    return os.path.expanduser(configured) if configured else default_dir(environ)


def backoff_delay(attempts: int, backoff: tuple[int, int]) -> float:
    """Seconds to wait after the `attempts`-th failure: FIRST, doubling, capped at MAX."""
    first, cap = backoff
    return float(min(first * 2 ** max(attempts - 1, 0), cap))


def blames_message(err: RelayError) -> bool:
    """True when a temporary failure is this message's own, so back-off applies.

    A 4xx reply to its MAIL, RCPT or DATA, or the session lost during its DATA (a server
    that falls over on this message). Not: no connection, a refused greeting, EHLO,
    STARTTLS or AUTH, or 421 (the server is closing, whatever we sent).
    """
    if err.step not in MESSAGE_STEPS:
        return False
    return not replies.closes_session(err.code)


def one_line(text: str, limit: int = 900) -> str:
    """Text fit for a header line or a listing: controls become spaces, bounded length."""
    flat = "".join(c if c.isprintable() else " " for c in text)
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


#: The sidecar's fields, in the order they are written.
_FIELDS = (
    "id",
    "sender",
    "recipients",
    "queued_at",
    "next_try",
    "size",
    "attempts",
    "last_error",
    "message_id",
    "mailhub",
    "dead_letter",
    "delivered",
    "uid",
    "origin",
)


class Entry(Record):
    """One queued message as its sidecar describes it (a value: `replace` to change)."""

    __slots__ = _FIELDS

    def __init__(
        self,
        id: str,
        sender: str,
        recipients: tuple[str, ...],
        queued_at: float,
        next_try: float,
        size: int,
        attempts: int = 0,
        last_error: str | None = None,
        message_id: str | None = None,
        mailhub: str | None = None,
        dead_letter: str | None = None,
        delivered: tuple[str, ...] = (),
        uid: int | None = None,
        origin: str | None = None,
    ) -> None:
        self.id = id
        self.sender = sender
        self.recipients = recipients
        self.queued_at = queued_at
        self.next_try = next_try
        self.size = size
        self.attempts = attempts
        self.last_error = last_error
        self.message_id = message_id
        #: A per-user mailhub from revaliases ("host:port"); None: the config's mailhubs.
        self.mailhub = mailhub
        #: The submitter's dead.letter, where the message goes if it never gets through.
        self.dead_letter = dead_letter
        #: Recipients the server already accepted (never sent to again).
        self.delivered = delivered
        #: The sender's uid as the kernel reported it (None: written before it was recorded).
        self.uid = uid
        #: For an entry picked up from the offline drop: "<file name>:<inode>" of the drop
        #: file, so a pickup interrupted between commit and unlink does not queue it twice.
        self.origin = origin

    def due(self, now: float) -> bool:
        return self.next_try <= now

    def age(self, now: float) -> float:
        return max(0.0, now - self.queued_at)

    def to_json(self) -> bytes:
        import json  # lazily: `mailq` on an empty queue reads no sidecar

        data: dict[str, Any] = {"version": FORMAT_VERSION}
        data.update((name, getattr(self, name)) for name in _FIELDS)
        data["recipients"] = list(self.recipients)
        data["delivered"] = list(self.delivered)
        # ASCII with escapes: a header-derived value may hold surrogates (8-bit bytes).
        return json.dumps(data, indent=1).encode("ascii") + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, name: str) -> Entry:
        """Parse and check a sidecar; raises ValueError saying what is wrong."""
        import json

        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{META} is not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{META} is not a JSON object")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{META}: unknown format version {data.get('version')!r}")
        if data.get("id") != name:
            raise ValueError(f"{META} names entry {data.get('id')!r}, not {name!r}")
        recipients = _addresses(data.get("recipients"), "recipients")
        if not recipients:
            raise ValueError(f"{META}: no recipients")
        mailhub = _optional(data, "mailhub")
        if mailhub is not None:
            from relay.config import parse_hostport

            parse_hostport(mailhub)  # ValueError names the bad value
        return cls(
            id=name,
            sender=_text(data, "sender", allow_empty=True),
            recipients=recipients,
            queued_at=_number(data, "queued_at"),
            next_try=_number(data, "next_try"),
            size=_count(data, "size"),
            attempts=_count(data, "attempts"),
            last_error=_optional(data, "last_error"),
            message_id=_optional(data, "message_id"),
            mailhub=mailhub,
            dead_letter=_optional(data, "dead_letter"),
            delivered=_addresses(data.get("delivered", []), "delivered"),
            uid=_uid(data.get("uid")),
            origin=_optional(data, "origin"),
        )


def _text(data: Mapping[str, Any], key: str, *, allow_empty: bool = False) -> str:
    value = data.get(key)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise ValueError(f"{META}: {key} missing or not a string")
    if not _CONTROLS.isdisjoint(value):  # a set test in C: read once per sidecar field
        raise ValueError(f"{META}: {key} holds a control character")
    return value


_CONTROLS = frozenset(map(chr, (*range(32), 127)))


def _uid(value: object) -> int | None:
    if value is None:
        return None  # written before senders' uids were recorded
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise ValueError(f"{META}: uid is not a uid")
    return value


def _optional(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{META}: {key} is not a string")
    return value


def _number(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{META}: {key} missing or not a number")
    return float(value)


def _count(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{META}: {key} missing or not a count")
    return value


def _addresses(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{META}: {key} is not a list")
    # An address with CR, LF or another control would be an SMTP command injection.
    return tuple(_text({key: item}, key) for item in value)


class Corrupt(Record):
    """An entry that cannot be read: where it is and what is wrong with it."""

    __slots__ = ("id", "quarantined", "reason")

    def __init__(self, id: str, reason: str, quarantined: bool) -> None:
        self.id = id
        self.reason = reason
        self.quarantined = quarantined


class Scan(Record):
    """What is in the queue right now: entries in queue order, and the corrupt ones."""

    __slots__ = ("corrupt", "entries")

    def __init__(
        self, entries: list[Entry] | None = None, corrupt: list[Corrupt] | None = None
    ) -> None:
        self.entries: list[Entry] = entries if entries is not None else []
        self.corrupt: list[Corrupt] = corrupt if corrupt is not None else []


class Queue:
    """An open queue directory; every operation works on directory file descriptors.

    Working through descriptors opened with O_NOFOLLOW means a symlink swapped in after
    the checks cannot redirect a write (docs/architecture.md, "Security rules").
    """

    def __init__(self, path: str, root: int, tmp: int, new: int, corrupt: int) -> None:
        self.path = path
        self._root, self._tmp, self._new, self._corrupt = root, tmp, new, corrupt

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, *, create: bool = True) -> Queue:
        """Open (and with `create`, make) the queue; CantCreateError (73) if unusable.

        Refused: a symlink, something not a directory, a directory owned by someone else
        or writable by group or others (another user could plant or remove entries).
        Without `create`, a missing queue raises FileNotFoundError.
        """
        if create:
            _make_dirs(path)
        try:
            root = os.open(path, _DIR_FLAGS)
        except FileNotFoundError:
            if not create:
                raise
            raise CantCreateError(
                "queue directory vanished while being created", path=path
            ) from None
        except OSError as err:
            raise _open_error(err, path) from None
        fds = [root]
        try:
            _check_ours(root, path)
            for name in ("tmp", "new", "corrupt"):
                fds.append(_subdir(root, name, path, create))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return cls(path, *fds)

    def close(self) -> None:
        for fd in (self._root, self._tmp, self._new, self._corrupt):
            if fd >= 0:
                os.close(fd)
        self._root = self._tmp = self._new = self._corrupt = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- enqueue --------------------------------------------------------------------------

    def enqueue(
        self,
        message: bytes | Iterable[bytes],
        *,
        sender: str,
        recipients: Sequence[str],
        message_id: str | None = None,
        mailhub: str | None = None,
        dead_letter: str | None = None,
        attempts: int = 0,
        last_error: str | None = None,
        next_try: float | None = None,
        now: float | None = None,
        uid: int | None = None,
        origin: str | None = None,
    ) -> Entry:
        """Store a message durably (protocol in the module docstring); returns its entry.

        `message` is the bytes, or its pieces in order (written as they come, so a big
        message is never held whole).

        Raises CantCreateError (73) when the entry cannot be created, IOFailure (74) when
        it cannot be written (disk full, I/O error); nothing is left in new/ then.
        """
        if not recipients:
            raise ValueError("enqueue needs at least one recipient")
        when = time.time() if now is None else now
        name, entry_fd = self._make_entry_dir(when)
        pieces = (message,) if isinstance(message, bytes) else message
        entry = Entry(
            id=name,
            sender=sender,
            recipients=tuple(recipients),
            queued_at=when,
            next_try=when if next_try is None else next_try,
            size=0,  # known once written
            attempts=attempts,
            last_error=one_line(last_error) if last_error else None,
            message_id=message_id,
            mailhub=mailhub,
            dead_letter=dead_letter,
            uid=uid,
            origin=origin,
        )
        committed = False
        try:
            try:
                entry = entry.replace(size=_write_file(entry_fd, MESSAGE, pieces))
                _write_file(entry_fd, META, entry.to_json())
                os.fsync(entry_fd)
            finally:
                os.close(entry_fd)
            os.rename(name, name, src_dir_fd=self._tmp, dst_dir_fd=self._new)
            committed = True
            os.fsync(self._new)
        except OSError as err:
            if not committed:
                self._discard(name)
            where = os.path.join(self.path, "new" if committed else "tmp")
            raise _write_error(err, where) from None
        return entry

    def _make_entry_dir(self, now: float) -> tuple[str, int]:
        for _ in range(100):
            name = new_id(now)
            try:
                os.mkdir(name, 0o700, dir_fd=self._tmp)
            except FileExistsError:
                continue  # same microsecond, same pid, same random: draw again
            except OSError as err:
                raise _write_error(err, os.path.join(self.path, "tmp")) from None
            try:
                return name, os.open(name, _DIR_FLAGS, dir_fd=self._tmp)
            except OSError as err:
                self._discard(name)
                raise _write_error(err, os.path.join(self.path, "tmp")) from None
        raise CantCreateError("cannot find a free entry name", path=self.path)

    def _discard(self, name: str) -> None:
        """Best effort removal of a tmp/ entry; what is left is cleaned by `clean_tmp`."""
        _remove_tree(self._tmp, name)

    # -- reading --------------------------------------------------------------------------

    def scan(self) -> Scan:
        """Committed entries in queue order; unreadable ones listed as corrupt.

        Holds every entry: for tests and small callers. A listing or a flush of a big
        queue goes through `entries` and `quarantined`, one entry at a time.
        """
        found = Scan()
        for item in self.entries():
            if isinstance(item, Entry):
                found.entries.append(item)
            else:
                found.corrupt.append(item)
        found.corrupt.extend(self.quarantined())
        return found

    def entries(self) -> Iterator[Entry | Corrupt]:
        """The committed entries in queue order, read one at a time (memory: the names of
        one pass of `sorted_names`); an unreadable one comes as `Corrupt` in its place."""
        for name in sorted_names(self._new):
            try:
                yield self._load(self._new, name)
            except FileNotFoundError:
                continue  # delivered and removed while we looked
            except ValueError as err:
                yield Corrupt(name, str(err), quarantined=False)

    def quarantined(self) -> Iterator[Corrupt]:
        """What is in corrupt/, in name order, each with why it was (or is) unreadable."""
        for name in sorted_names(self._corrupt):
            if name.startswith(SET_ASIDE_PREFIX):
                yield Corrupt(name, SET_ASIDE_REASON, quarantined=True)
                continue
            try:
                self._load(self._corrupt, name)
                reason = "quarantined, but now readable: move it back to new/ to retry it"
            except FileNotFoundError:
                continue
            except ValueError as err:
                reason = str(err)
            yield Corrupt(name, reason, quarantined=True)

    def names(self) -> Iterator[str]:
        """Names in new/ in queue order, as they stand when this starts (a flush's work
        list: entries committed after it began wait for the next flush)."""
        return sorted_names(self._new, snapshot=True)

    def _load(self, parent: int, name: str) -> Entry:
        """Read an entry; ValueError says why it is corrupt, FileNotFoundError if it left."""
        if not is_entry_name(name):
            raise ValueError("not a queue entry name")
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            raise
        except OSError as err:
            raise ValueError(f"not an entry directory ({err.strerror})") from None
        try:
            return _read_entry(fd, name)
        except FileNotFoundError:
            if _exists(parent, name):
                raise ValueError("message or meta.json missing") from None
            raise
        finally:
            os.close(fd)

    def has(self, name: str) -> bool:
        """Whether `name` is (still) a committed entry."""
        return _exists(self._new, name)

    def count(self) -> int:
        """Entries in new/ (a directory listing, no sidecar read, no list of names)."""
        with os.scandir(self._new) as found:
            return sum(1 for _ in found)

    def find(self, wanted: str) -> str:
        """The id of the entry named `wanted` or by a unique prefix; KeyError otherwise."""
        with os.scandir(self._new) as found:
            names = [item.name for item in found if item.name.startswith(wanted)]
        if wanted in names:
            return wanted
        if len(names) == 1:
            return names[0]
        raise KeyError(
            f"{len(names)} queue entries start with '{wanted}'"
            if names
            else f"no queue entry '{wanted}'"
        )

    # -- locking --------------------------------------------------------------------------

    def lock(self, name: str) -> Locked | None:
        """Lock an entry for delivery; None when it is gone or another process holds it.

        Raises ValueError (corrupt) when the entry is there but unreadable.
        """
        import fcntl

        try:
            entry_fd = os.open(name, _DIR_FLAGS, dir_fd=self._new)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise ValueError(f"not an entry directory ({err.strerror})") from None
        message_fd = -1
        try:
            try:
                message_fd = os.open(
                    MESSAGE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=entry_fd
                )
            except FileNotFoundError:
                if _exists(self._new, name):
                    raise ValueError("message file missing") from None
                raise
            try:
                fcntl.flock(message_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _Busy() from None
            # Granted: but the holder before us may have removed the entry meanwhile.
            try:
                here = os.stat(name, dir_fd=self._new, follow_symlinks=False)
            except FileNotFoundError:
                raise _Busy() from None
            mine = os.fstat(entry_fd)
            if (here.st_ino, here.st_dev) != (mine.st_ino, mine.st_dev):
                raise _Busy()
            try:
                entry = _read_entry(entry_fd, name)
            except FileNotFoundError:
                raise ValueError(f"{META} missing") from None  # ours, locked, in new/
        except (_Busy, FileNotFoundError):
            _close(message_fd, entry_fd)
            return None
        except BaseException:
            _close(message_fd, entry_fd)
            raise
        return Locked(self, entry, entry_fd, message_fd)

    # -- quarantine, cleaning, status -----------------------------------------------------

    def quarantine(self, name: str) -> str | None:
        """Move a corrupt entry from new/ to corrupt/; returns where, None if it left."""
        try:
            os.rename(name, name, src_dir_fd=self._new, dst_dir_fd=self._corrupt)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise _write_error(err, os.path.join(self.path, "corrupt")) from None
        os.fsync(self._corrupt)
        os.fsync(self._new)
        return os.path.join(self.path, "corrupt", name)

    def clean_tmp(self, now: float | None = None, max_age: float = TMP_MAX_AGE) -> list[str]:
        """Remove what crashes left in tmp/: removed entries, and abandoned writes; returns
        the names removed (`sweep_tmp` counts them instead, holding no list)."""
        return list(self._sweep(now, max_age, done_only=False))

    def sweep_tmp(
        self, now: float | None = None, max_age: float = TMP_MAX_AGE, *, done_only: bool = False
    ) -> int:
        """`clean_tmp` without the list of names (a big flush leaves many); with
        `done_only`, removed entries only (what a flush leaves behind it)."""
        return sum(1 for _ in self._sweep(now, max_age, done_only=done_only))

    def _sweep(self, now: float | None, max_age: float, *, done_only: bool) -> Iterator[str]:
        """`<id>.done` is always junk (its removal was committed). A bare `<id>` is a write
        in progress unless it is old.

        A `.done` tree is deleted only after an fsync of new/ that followed its rename
        (the names seen so far, then the fsync, then their deletion): the rename may be
        one a flush has not made durable yet (`Removals`), and deleting the files of an
        entry whose rename a power cut then undoes would turn a duplicate delivery into
        a corrupt entry.
        """
        when = time.time() if now is None else now
        done: list[str] = []
        with os.scandir(self._tmp) as found:
            for item in found:
                name = item.name
                if name.endswith(".done"):
                    done.append(name)
                    if len(done) >= _DONE_PER_SYNC:
                        yield from self._remove_done(done)
                        done.clear()
                    continue
                if done_only:
                    continue
                if not _writer_is_gone(name):
                    # A write in progress touches its directory every few milliseconds;
                    # one untouched for an hour belongs to a writer that died (or hangs,
                    # and will then fail its rename and keep the message in dead.letter).
                    try:
                        info = os.stat(name, dir_fd=self._tmp, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if when - info.st_mtime < max_age:
                        continue
                if _remove_tree(self._tmp, name):
                    yield name
        yield from self._remove_done(done)

    def _remove_done(self, names: list[str]) -> Iterator[str]:
        if not names:
            return
        try:
            os.fsync(self._new)
        except OSError:
            return  # left for the next sweep: removing them is only housekeeping
        for name in names:
            if _remove_tree(self._tmp, name):
                yield name

    def write_status(self, status: Mapping[str, Any]) -> None:
        """Record how a flush ended, for `mailq`; advisory, so no fsync."""
        import json

        data = json.dumps(dict(status)).encode("ascii")
        temporary = f"{STATUS}.{os.getpid()}"
        try:
            _write_file(self._root, temporary, data, sync=False, exclusive=False)
            os.replace(temporary, STATUS, src_dir_fd=self._root, dst_dir_fd=self._root)
        except OSError:
            pass  # losing the status line loses no mail

    def read_status(self) -> dict[str, Any] | None:
        import json

        try:
            fd = os.open(STATUS, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._root)
        except OSError:
            return None
        try:
            data = json.loads(_read_all(fd))
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        return data if isinstance(data, dict) else None


class Removals:
    """The removals of one flush, made durable in batches: one fsync of new/ per
    `EVERY` removals or `SECONDS` seconds, and at the end (`finish`), instead of one per
    message (two thirds of a flush's time went to those fsyncs and to freeing the
    blocks of each removed entry between two messages: docs/performance.md, section 3).

    Why nothing can be lost: a removal is the rename of new/<id> to tmp/<id>.done after
    the server's 250 (or once the message is in dead.letter). If a power cut undoes a
    rename not yet synced, the entry is back in new/, whole (its files are deleted only
    after the fsync that made their rename durable: `Queue.sweep_tmp`), and the next
    flush sends it again: a duplicate, exactly as when the relay dies between the 250 and
    the rename, the window the design already accepts (docs/architecture.md, "Queue").
    The batch widens that window from one message to at most `EVERY` (or the messages of
    `SECONDS`), for a power cut only: a killed process loses no rename (the kernel has
    made it), so a SIGKILL still repeats at most the one message in flight. What must be
    durable before anyone is told is the commit of an entry (`enqueue`), which this
    does not touch; a deferral's sidecar update keeps its own fsync.
    """

    EVERY = 100
    SECONDS = 1.0
    #: Synced batches waiting for the deleter; beyond this, a batch is left in tmp/ for
    #: the sweep at the end (memory stays bounded whatever the disk's pace).
    BACKLOG = 20

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        #: Names renamed since the last fsync of new/ (at most EVERY, or a second's worth).
        self.unsynced: list[str] = []
        self.since = 0.0
        self._deleter: _Deleter | None = None

    def renamed(self, name: str) -> None:
        """One more removal made (not yet durable): tmp/`name`.done."""
        if not self.unsynced:
            self.since = time.monotonic()
        self.unsynced.append(name)
        self.tick()

    def tick(self) -> None:
        """Sync if the batch is full or old (also called between messages, so a slow
        server does not keep a batch unsynced while the flush waits on it)."""
        if self.unsynced and (
            len(self.unsynced) >= self.EVERY or time.monotonic() - self.since >= self.SECONDS
        ):
            self.sync()

    def sync(self) -> None:
        """fsync new/; the batch's files may then be deleted: by a thread of their own,
        not between two messages (freeing the blocks of 100,000 removed entries took a
        third of a flush's time, in system calls that leave the interpreter free)."""
        if not self.unsynced:
            return
        try:
            os.fsync(self.queue._new)
        except OSError as err:
            raise _write_error(err, os.path.join(self.queue.path, "new")) from None
        batch, self.unsynced = self.unsynced, []
        if self._deleter is None:
            self._deleter = _Deleter(self.queue._tmp, self.BACKLOG)
        self._deleter.give(batch)

    def finish(self) -> None:
        """The last sync; then wait for the deleter, and sweep what it left."""
        try:
            self.sync()
        finally:
            if self._deleter is not None:
                self._deleter.stop()
                self._deleter = None
        self.queue.sweep_tmp(done_only=True)


class _Deleter:
    """A thread deleting the trees of synced removals (`tmp/<id>.done`) while the flush
    goes on sending: `unlink` and `rmdir` release the interpreter, so their disk work
    overlaps the waits for the server. Only names whose rename an fsync of new/ has made
    durable are given to it (`Removals.sync`)."""

    def __init__(self, tmp_fd: int, backlog: int) -> None:
        import queue as queues
        import threading

        self.tmp_fd = tmp_fd
        self.batches: queues.Queue[list[str] | None] = queues.Queue(backlog)
        self.thread = threading.Thread(target=self._run, name="queue-deleter", daemon=True)
        self.thread.start()

    def give(self, batch: list[str]) -> None:
        # One producer: a queue not full now takes the batch without waiting. When the
        # disk is behind, the batch waits in tmp/ for the sweep at the end instead.
        if not self.batches.full():
            self.batches.put_nowait(batch)

    def stop(self) -> None:
        self.batches.put(None)
        self.thread.join()

    def _run(self) -> None:
        while (batch := self.batches.get()) is not None:
            for name in batch:
                _remove_tree(self.tmp_fd, name + ".done")


class _Busy(Exception):
    """Another process holds the entry, or removed it while we waited."""


class Locked:
    """An entry this process holds the lock of; release with `close` (or `with`)."""

    def __init__(self, queue: Queue, entry: Entry, entry_fd: int, message_fd: int) -> None:
        self.queue = queue
        self.entry = entry
        self._entry_fd = entry_fd
        self._message_fd = message_fd

    def read_message(self) -> bytes:
        """The stored message; ValueError if it is not the size the sidecar recorded."""
        data = _read_all(self._message_fd, offset=0)
        if len(data) != self.entry.size:
            raise ValueError(
                f"message is {len(data)} bytes, {META} says {self.entry.size}: truncated"
            )
        return data

    def open_message(self) -> bytes | Spooled:
        """The stored message as `relay.message.read_input` gives it: bytes when small,
        else read from the file in blocks (a big message is never held whole); ValueError
        if it is not the size the sidecar recorded."""
        from relay.message import SPOOL_AT, Spooled

        size = os.fstat(self._message_fd).st_size
        if size <= SPOOL_AT:
            return self.read_message()
        if size != self.entry.size:
            raise ValueError(f"message is {size} bytes, {META} says {self.entry.size}: truncated")
        return Spooled.of_file(os.dup(self._message_fd), size)

    def update(self, **changes: Any) -> Entry:
        """Rewrite the sidecar atomically (write, fsync, rename, fsync the entry)."""
        entry = self.entry.replace(**changes)
        temporary = META + ".new"
        try:
            _write_file(self._entry_fd, temporary, entry.to_json(), exclusive=False)
            os.replace(temporary, META, src_dir_fd=self._entry_fd, dst_dir_fd=self._entry_fd)
            os.fsync(self._entry_fd)
        except OSError as err:
            raise _write_error(err, os.path.join(self.queue.path, "new", entry.id)) from None
        self.entry = entry
        return entry

    def defer(
        self,
        error: str,
        backoff: tuple[int, int],
        *,
        blame: bool,
        now: float | None = None,
        **changes: Any,
    ) -> Entry:
        """Record a failed attempt: attempts + 1, the error, and when to try next."""
        when = time.time() if now is None else now
        attempts = self.entry.attempts + 1
        wait = backoff_delay(attempts, backoff) if blame else 0.0
        return self.update(
            attempts=attempts, last_error=one_line(error), next_try=when + wait, **changes
        )

    def remove(self, batch: Removals | None = None) -> None:
        """Take the entry out of the queue (after delivery, or once it is in dead.letter).

        Alone: rename, fsync new/, delete the files. With `batch` (a flush): the rename
        only; the batch makes it durable with others and has the files deleted outside
        the send loop (`Removals` says why nothing can be lost that way).
        """
        queue, name = self.queue, self.entry.id
        try:
            os.rename(name, name + ".done", src_dir_fd=queue._new, dst_dir_fd=queue._tmp)
            if batch is None:
                os.fsync(queue._new)
        except OSError as err:
            raise _write_error(err, os.path.join(queue.path, "new")) from None
        if batch is None:
            _remove_tree(queue._tmp, name + ".done")
        else:
            batch.renamed(name)

    def to_dead_letter(self, reason: str, recipients: Sequence[str] | None = None) -> str:
        """Append the message to its submitter's dead.letter, saying why; returns the path.

        The reason goes first as an `X-Mailx-Relay-Failed:` header so a reader of the
        mbox sees what happened to this copy. Raises 73/74 if dead.letter cannot be
        written; the entry is then left as it is.
        """
        from relay import deadletter

        whom = ", ".join(recipients if recipients is not None else self.entry.recipients)
        note = one_line(f"not delivered to {whom}: {reason}")
        header = f"X-Mailx-Relay-Failed: {note}\r\n".encode("utf-8", "surrogateescape")
        # Read in blocks, whatever its size (a truncated file: whatever there is).
        data = _FileBlocks(self._message_fd, header)
        uid = self.entry.uid
        if uid is not None and uid != os.geteuid():
            # Another user's message (the offline drop, the service): never write into
            # their home as root; keep it in the spool's dead area, where mailq --dead
            # shows it to them and to root.
            return deadletter.save_to_spool(data, self.entry.sender, self.queue.path, uid, note)
        return deadletter.save(
            data, self.entry.sender, self.entry.dead_letter, spool=self.queue.path
        )

    def close(self) -> None:
        _close(self._message_fd, self._entry_fd)
        self._message_fd = self._entry_fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _writer_is_gone(name: str) -> bool:
    """True when the process that named tmp/`name` (its pid is in the id) no longer runs.

    Such a write can never be committed, so it need not wait out TMP_MAX_AGE (a killed
    burst of senders otherwise leaves its partial messages for an hour). A pid that was
    reused by another process only delays the removal to the age rule: never too early.
    """
    if not is_entry_name(name):
        return False
    pid = int(name.split(".")[2])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it runs, as another user
        return False
    return False


def new_id(now: float) -> str:
    """Time (UTC, to the microsecond) + pid + 24 random bits: sortable and unique.

    Two submissions in one microsecond differ in pid; one process differs in the random
    part; and mkdir refuses a name that exists, so a collision is retried, never shared.
    """
    seconds = int(now)
    micros = min(int((now - seconds) * 1e6), 999_999)
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(seconds))
    return f"{stamp}.{micros:06d}.{os.getpid()}.{os.urandom(3).hex()}"


# -- file helpers -----------------------------------------------------------------------


def _make_dirs(path: str) -> None:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError:
        pass  # a file or a symlink: os.open below says which and refuses
    except OSError as err:
        raise _open_error(err, path) from None


def _check_ours(fd: int, path: str) -> None:
    info = os.fstat(fd)
    if info.st_uid != os.geteuid():
        raise CantCreateError(
            f"queue directory belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}); "
            "refusing to use it",
            path=path,
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CantCreateError(
            f"queue directory is writable by others (mode {stat.S_IMODE(info.st_mode):o}); "
            f"fix with: chmod 700 {path}",
            path=path,
        )


def _subdir(root: int, name: str, path: str, create: bool) -> int:
    where = os.path.join(path, name)
    if create:
        try:
            os.mkdir(name, 0o700, dir_fd=root)
            os.fsync(root)
        except FileExistsError:
            pass
        except OSError as err:
            raise _open_error(err, where) from None
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=root)
    except FileNotFoundError:
        if not create:
            raise
        raise CantCreateError("vanished while being created", path=where) from None
    except OSError as err:
        raise _open_error(err, where) from None
    try:
        _check_ours(fd, where)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_error(err: OSError, path: str) -> RelayError:
    why = err.strerror or str(err)
    # O_NOFOLLOW|O_DIRECTORY on a symlink fails with ELOOP or ENOTDIR, depending on order.
    if err.errno == errno.ELOOP or (err.errno == errno.ENOTDIR and os.path.islink(path)):
        why = "it is a symlink; refusing to follow it"
    elif err.errno == errno.ENOTDIR:
        why = "not a directory (or a path component is not one)"
    return CantCreateError(f"cannot use the queue directory: {why}", path=path)


def _write_error(err: OSError, path: str) -> RelayError:
    if err.errno in _IO_ERRNOS:
        return IOFailure(f"cannot write the queue: {err.strerror or err}", path=path)
    return CantCreateError(f"cannot write the queue: {err.strerror or err}", path=path)


def _write_file(
    dir_fd: int,
    name: str,
    data: bytes | Iterable[bytes],
    *,
    sync: bool = True,
    exclusive: bool = True,
) -> int:
    """Write `data` (bytes, or pieces in order) to a new file; returns its size."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_EXCL if exclusive else os.O_TRUNC
    fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    size = 0
    try:
        for piece in (data,) if isinstance(data, bytes) else data:
            view = memoryview(piece)
            size += len(view)
            while view:
                view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)  # errors reported by close (NFS) are write errors too: not swallowed
    return size


class _FileBlocks:
    """A queued message file read in blocks from the start, after `head`
    (`relay.deadletter.Blocks`)."""

    def __init__(self, fd: int, head: bytes) -> None:
        self.fd = fd
        self.head = head

    def blocks(self) -> Iterator[bytes]:
        yield self.head
        offset = 0
        while block := os.pread(self.fd, 1 << 18, offset):
            offset += len(block)
            yield block


def _read_all(fd: int, offset: int | None = None) -> bytes:
    if offset is not None:
        os.lseek(fd, offset, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_entry(entry_fd: int, name: str) -> Entry:
    meta_fd = os.open(META, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=entry_fd)
    try:
        raw = _read_all(meta_fd)
    finally:
        os.close(meta_fd)
    entry = Entry.from_json(raw, name)
    info = os.stat(MESSAGE, dir_fd=entry_fd, follow_symlinks=False)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("message is not a regular file")
    if info.st_size != entry.size:
        raise ValueError(f"message is {info.st_size} bytes, {META} says {entry.size}: truncated")
    return entry


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _remove_tree(dir_fd: int, name: str) -> bool:
    """Remove one of our entry directories (regular files only), or a stray file.

    Anything else (a subdirectory someone made) makes it give up: the leftover is
    harmless in tmp/, and guessing about it is not the queue's business.
    """
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(name, dir_fd=dir_fd)
            return True
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        try:
            for child in os.listdir(fd):
                os.unlink(child, dir_fd=fd)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)
    except OSError:  # gone already (a concurrent cleaner got there first), or odd
        return False
    return True


def _close(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            os.close(fd)
