"""`mailq`: list the queue, flush it, delete an entry; argv and output, nothing else.

    mailq [-C file] [--json]                       list (also `sendmail -bp`)
    mailq --dead [-C file] [--json]                list the spool's dead-letter area
    mailq --flush [--force] [--quiet] [-v] [-C file]  deliver (also `sendmail -q`);
                                                   root picks up the offline drop first
    mailq --delete ID... [-C file]                  move entries to dead.letter

The queue logic is `relay.queue` (storage, locks, back-off) and `relay.flush` (sending).
Imports are lazy: listing an empty queue loads neither `email`, `ssl` nor `smtplib`,
since a monitoring check may run it every minute.

Exit status (documented in mailq(1); every status comes from the table in relay/errors.py,
and errors become one line through `relay.entry.run`): listing 0 unless the configuration
(78) or the queue directory (73) is unusable; deleting the status of the first entry that
could not be deleted; a flush 0 when everything due was sent or stays queued for a
temporary reason, else the status `FlushReport.exit_code` gives.
"""

from __future__ import annotations

import os
import sys
import time

from relay.entry import print_version, run, usage_on_error
from relay.entry import say as entry_say
from relay.errors import (
    DataError,
    NoInputError,
    RelayError,
    TempFailError,
    UsageError,
)

# Annotations only (`typing` at run time is start-up cost: docs/architecture.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, TextIO

    from relay.config import Config
    from relay.deadletter import DeadEntry
    from relay.flush import FlushReport
    from relay.queue import Corrupt, Entry

PROG = "mailq"

USAGE = """\
usage: mailq [-C file] [--json]
       mailq --dead [-C file] [--json]
       mailq --flush [--force] [--quiet] [-v] [-C file]
       mailq --delete ID... [-C file]
       mailq -V | --version | -h | --help"""

HELP = (
    USAGE
    + """

List the mail queue, deliver it, or take entries out of it.

  -C, --config FILE  relay configuration (default: $RELAY_CONFIG, /etc/ssmtp/ssmtp.conf)
  --json             list as JSON, for monitoring
  --dead             list the messages kept in the spool's dead-letter area
  --flush            deliver every due entry over one connection (= sendmail -q);
                     as root, pick up the offline drop first
  --force            with --flush: ignore the back-off, try every entry now
  --quiet            with --flush: print errors only, no summary line (for cron)
  -v, --verbose      with --flush: show the SMTP dialogue on standard error
  --delete ID...     move entries (an ID or a unique prefix) to dead.letter
  -V, --version      print the version

See mailq(1)."""
)


class Options:
    """What the command line asked for (a plain class: `dataclasses` would cost
    `mailq -V`, a usage error and an empty listing a good part of their start-up)."""

    def __init__(self) -> None:
        self.mode = "list"  # list | dead | flush | delete | version | help
        self.config: str | None = None
        self.json = False
        self.force = False
        self.quiet = False
        self.verbose = False
        self.ids: list[str] = []

    def __repr__(self) -> str:
        return f"Options({vars(self)!r})"


def parse_args(argv: Sequence[str]) -> Options:
    """Parse mailq's argv (without argv[0]); raises UsageError."""
    opts = Options()
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        name, equals, attached = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in ("-C", "--config"):
            if equals:
                opts.config = attached
            elif index < len(args):
                opts.config, index = args[index], index + 1
            else:
                raise UsageError(f"option {name} needs a file")
        elif arg.startswith("-C") and not arg.startswith("--"):
            opts.config = arg[2:]
        elif equals:
            raise UsageError(f"option {name} takes no value")
        elif arg == "--json":
            opts.json = True
        elif arg in ("--flush", "-q"):
            opts.mode = _mode(opts, "flush")
        elif arg == "--force":
            opts.force = True
        elif arg == "--quiet":
            opts.quiet = True
        elif arg in ("-v", "--verbose"):
            opts.verbose = True
        elif arg == "--delete":
            opts.mode = _mode(opts, "delete")
        elif arg == "--dead":
            opts.mode = _mode(opts, "dead")
        elif arg in ("-V", "--version"):
            opts.mode = "version"
        elif arg in ("-h", "--help"):
            opts.mode = "help"
        elif opts.mode == "delete" and not arg.startswith("-"):
            opts.ids.append(arg)
        else:
            raise UsageError(f"unknown option or argument '{arg}'")
    if opts.mode == "delete" and not opts.ids:
        raise UsageError("--delete needs the ID of at least one entry (see mailq)")
    if opts.mode in ("version", "help"):
        return opts
    if opts.force and opts.mode != "flush":
        raise UsageError("--force goes with --flush")
    if opts.json and opts.mode not in ("list", "dead"):
        raise UsageError("--json goes with the listing only")
    return opts


def _mode(opts: Options, wanted: str) -> str:
    if opts.mode not in ("list", wanted):
        raise UsageError(f"--{opts.mode} and --{wanted} do not go together")
    return wanted


def main(argv: Sequence[str] | None = None) -> int:
    """The `mailq` console script (listing, `--flush`, `--delete`, `--dead`): a sysexits
    status, or, called without `argv`, the process ends (`relay.entry.run`)."""
    return run(PROG, _main, argv)


def _main(args: Sequence[str]) -> int:
    with usage_on_error(USAGE):
        opts = parse_args(args)
    if opts.mode == "version":
        return print_version(PROG)
    if opts.mode == "help":
        sys.stdout.write(HELP + "\n")
        return os.EX_OK
    from relay import config as config_module

    try:
        config = config_module.load(opts.config)
    except RelayError as err:
        from relay.client import needs_service

        if opts.mode not in ("list", "dead") or not needs_service(err):
            raise
        # A user who may not read the configuration still sees their own mail: their
        # own queue, and (through mailx-relayd) theirs in the system queue.
        config = config_module.Config(path=config_module.config_path(opts.config, os.environ))
    for warning in config.warnings:
        say(sys.stderr, warning)
    if opts.mode == "flush":
        return run_flush(config, force=opts.force, quiet=opts.quiet, verbose=opts.verbose)
    if opts.mode == "delete":
        return delete(config, opts.ids)
    if opts.mode == "dead":
        return show_dead(config, as_json=opts.json)
    return show(config, as_json=opts.json)


def say(stream: TextIO, text: str, prog: str = PROG) -> None:
    entry_say(prog, text, stream)


# -- listing ------------------------------------------------------------------------------


def show(
    config: Config,
    *,
    as_json: bool = False,
    out: TextIO | None = None,
    now: float | None = None,
) -> int:
    """Print the queue (`mailq`, `sendmail -bp`); a queue never made is an empty one.

    A stream: each entry is printed as it is read and the totals come from running
    counts, so the memory of a listing of 100,000 entries is that of one pass of
    `relay.queue.sorted_names`, not of every sidecar parsed (the output is the same).
    """
    from relay.queue import Queue, queue_dir

    out = out or sys.stdout
    when = time.time() if now is None else now
    path = queue_dir(config.queue_dir)
    listing = _JsonListing(out, path, when) if as_json else _TextListing(out, path, when)
    try:
        with Queue.open(path, create=False) as queue:
            for item in queue.entries():
                listing.add(item)
            for bad in queue.quarantined():
                listing.add(bad)
            # Read only when it is shown: an empty queue loads no `json` (start-up).
            status = queue.read_status() if listing.count or as_json else None
    except FileNotFoundError:
        status = None
    system = _system_part(path)
    listing.finish(status, system)
    return os.EX_OK


class _TextListing:
    """`mailq`'s table, written entry by entry (the corrupt ones after the totals)."""

    def __init__(self, out: TextIO, path: str, now: float) -> None:
        self.out, self.path, self.now = out, path, now
        self.count = 0
        self.total = 0
        self.corrupt: list[Corrupt] = []
        self.users: dict[int | None, str] = {}

    def add(self, item: Entry | Corrupt) -> None:
        from relay.queue import Corrupt

        if isinstance(item, Corrupt):
            self.corrupt.append(item)  # listed after the totals; few, and each short
            return
        entry, now = item, self.now
        if not self.count:
            self.out.write(
                f"{'Queue ID':<34} {'Size':>7} {'Age':>5} {'Tries':>5}  {'Next try':<9} "
                f"{'User':<10} Sender\n"
            )
        self.count += 1
        self.total += entry.size
        user = self.users.get(entry.uid)
        if user is None:  # one passwd lookup per sender, not per entry
            user = self.users[entry.uid] = user_name(entry.uid)
        wait = "now" if entry.due(now) else "in " + ago(entry.next_try - now)
        lines = [
            f"{entry.id:<34} {entry.size:>7} {ago(entry.age(now)):>5} {entry.attempts:>5}  "
            f"{wait:<9} {user:<10} {entry.sender or '<>'}"
        ]
        if entry.last_error:
            lines.append(f"  (last error: {entry.last_error})")
        lines.extend(f"    {recipient}" for recipient in entry.recipients)
        self.out.write("\n".join(lines) + "\n")

    def finish(self, status: Mapping[str, Any] | None, system: Mapping[str, Any] | None) -> None:
        lines: list[str] = []
        if self.count:
            count = f"{self.count} entr{'y' if self.count == 1 else 'ies'}"
            lines.append(f"-- {count}, {self.total} bytes, in {self.path}")
        else:
            lines.append("Mail queue is empty")
        for bad in self.corrupt:
            where = "corrupt" if bad.quarantined else "new"
            lines.append(f"corrupt entry {os.path.join(self.path, where, bad.id)}: {bad.reason}")
        if status and self.count and isinstance(status.get("finished_at"), int | float):
            trouble = status.get("fatal") or status.get("stopped")
            said = f": {trouble}" if trouble else f": {status.get('sent', 0)} sent"
            lines.append(f"-- last flush {ago(self.now - status['finished_at'])} ago{said}")
        self.out.write("\n".join(lines) + "\n")
        if system is not None:
            self.out.write(_system_text(system, self.now))


class _JsonListing:
    """`mailq --json`, written entry by entry: byte for byte what `json.dumps(listing,
    indent=2)` gives for the whole listing (tests/relay/test_mailq_stream.py), without
    holding it. Each entry is dumped alone and indented to its depth: JSON strings hold
    no raw newline, so re-indenting the lines of a dump cannot touch a value."""

    def __init__(self, out: TextIO, path: str, now: float) -> None:
        self.out, self.path, self.now = out, path, now
        self.count = 0
        self.corrupt: list[Corrupt] = []
        self.users: dict[int | None, str | None] = {}

    def add(self, item: Entry | Corrupt) -> None:
        from relay.queue import Corrupt

        if isinstance(item, Corrupt):
            self.corrupt.append(item)
            return
        self.out.write(
            (
                ",\n    "
                if self.count
                else '{\n  "queue": ' + _dumps(self.path) + ',\n  "entries": [\n    '
            )
            + _dumps(_entry_json(item, self.now, self.users), 4)
        )
        self.count += 1

    def finish(self, status: Mapping[str, Any] | None, system: Mapping[str, Any] | None) -> None:
        out = self.out
        if self.count:
            out.write("\n  ]")
        else:
            out.write('{\n  "queue": ' + _dumps(self.path) + ',\n  "entries": []')
        corrupt = [
            {
                "id": bad.id,
                "reason": bad.reason,
                "path": os.path.join(self.path, "corrupt" if bad.quarantined else "new", bad.id),
                "quarantined": bad.quarantined,
            }
            for bad in self.corrupt
        ]
        out.write(',\n  "corrupt": ' + _dumps(corrupt, 2))
        out.write(',\n  "last_flush": ' + _dumps(_status_json(status), 2))
        if system is not None:
            out.write(',\n  "system_queue": ' + _dumps(system, 2))
        out.write("\n}\n")


def _dumps(value: object, depth: int = 0) -> str:
    """`value` as `json.dumps(..., indent=2)` writes it `depth` spaces deep."""
    import json

    text = json.dumps(value, indent=2)
    return text.replace("\n", "\n" + " " * depth) if depth else text


def system_entries_for(uid: int, path: str | None = None) -> list[Entry] | None:
    """The system queue's entries sent by `uid`; None when this process may not read them
    and no submission service answers for it.

    The spool is root's (0700): an ordinary user is answered by mailx-relayd, which reads
    it and answers for the caller's uid (SO_PEERCRED) only; without a service they are
    told that root lists them.
    """
    from relay.queue import SYSTEM_QUEUE_DIR, Entry, Queue

    try:
        with Queue.open(path or SYSTEM_QUEUE_DIR, create=False) as queue:
            # Streamed: this user's entries are held, not the whole system queue's.
            return [e for e in queue.entries() if isinstance(e, Entry) and e.uid == uid]
    except FileNotFoundError:
        return []
    except (OSError, RelayError):
        return _entries_from(_service_listing())


def _entries_from(answer: dict[str, Any] | None) -> list[Entry] | None:
    if answer is None:
        return None
    import json

    from relay.queue import Entry

    return [Entry.from_json(json.dumps(d).encode(), str(d.get("id"))) for d in answer["entries"]]


def _service_listing() -> dict[str, Any] | None:
    """What mailx-relayd says this user has in the system queue and dead area (it
    answers for the peer's uid, from SO_PEERCRED); None when it does not run."""
    from relay.client import ask_listing

    try:
        return ask_listing()
    except ValueError:  # a sidecar that does not parse: as if nobody answered
        return None


def _system_part(listed: str) -> dict[str, Any] | None:
    """For an ordinary user: their entries in the system queue, or why they are not shown.

    The service is asked first: it knows where the system queue is (QueueDir in a
    configuration this user may not read).
    """
    from relay.queue import SYSTEM_QUEUE_DIR

    if os.geteuid() == 0 or os.path.abspath(listed) == SYSTEM_QUEUE_DIR:
        return None
    uid = os.getuid()
    answer = _service_listing()
    if answer is not None:
        queue, found = str(answer.get("queue")), _entries_from(answer)
    elif not os.path.isdir(SYSTEM_QUEUE_DIR):
        return None  # no system relay on this host: nothing of theirs can be there
    else:
        queue, found = SYSTEM_QUEUE_DIR, system_entries_for(uid)
    return {
        "queue": queue,
        "uid": uid,
        "entries": None if found is None else [_entry_json(e, time.time()) for e in found],
        "note": None if found is not None else NOT_YOURS_TO_READ,
    }


NOT_YOURS_TO_READ = (
    "messages you sent through the system relay (the service or the offline drop) wait "
    "in the system queue, which only root may read: root's mailq lists them with your uid"
)


def _system_text(system: Mapping[str, Any], now: float) -> str:
    entries = system["entries"]
    if entries is None:
        return f"-- {system['queue']}: {system['note']}\n"
    if not entries:
        return f"-- none of yours in the system queue {system['queue']}\n"
    lines = [f"-- yours in the system queue {system['queue']}:"]
    lines.extend(f"{e['id']:<34} {e['size']:>7} {', '.join(e['recipients'])}" for e in entries)
    return "\n".join(lines) + "\n"


def user_name(uid: int | None) -> str:
    """The login of a sender's uid for a listing: name, else the number, else "-"."""
    if uid is None:
        return "-"  # queued before senders' uids were recorded
    from relay.envelope import identity_of

    return identity_of(uid).login


def _entry_json(
    entry: Entry, now: float, users: dict[int | None, str | None] | None = None
) -> dict[str, Any]:
    """An entry as `mailq --json` lists it; `users` caches the passwd lookups."""
    if users is None:
        users = {}
    if entry.uid not in users:
        users[entry.uid] = None if entry.uid is None else user_name(entry.uid)
    return {
        "id": entry.id,
        "queued_at": iso(entry.queued_at),
        "age": round(entry.age(now)),
        "size": entry.size,
        "sender": entry.sender,
        "uid": entry.uid,
        "user": users[entry.uid],
        "recipients": list(entry.recipients),
        "delivered": list(entry.delivered),
        "attempts": entry.attempts,
        "last_error": entry.last_error,
        "next_try": iso(entry.next_try),
        "due": entry.due(now),
        "message_id": entry.message_id,
    }


def _status_json(status: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not status:
        return None
    shown = dict(status)
    if isinstance(shown.get("finished_at"), int | float):
        shown["finished_at"] = iso(shown["finished_at"])
    return shown


def iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def ago(seconds: float) -> str:
    """A short duration: 45s, 12m, 3h, 2d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- the spool's dead-letter area -----------------------------------------------------------


def dead_entries_for(
    uid: int, queue_path: str | None = None, answer: dict[str, Any] | None = None
) -> list[DeadEntry] | None:
    """Messages kept for `uid` in the spool's dead area; None when we may not read it.

    Root reads the area; an ordinary user may not (it is root's, 0700). A function so a
    query to the submission service can answer here later.
    """
    from relay import deadletter

    try:
        return deadletter.spool_entries(queue_path, owner=uid)
    except OSError:
        answer = answer or _service_listing()
        if answer is None or not isinstance(answer.get("dead"), list):
            return None
        return [
            deadletter.DeadEntry(
                str(d["name"]),
                str(d["path"]),
                int(d["owner"]),
                int(d["size"]),
                float(d["kept_at"]),
                str(d["reason"]),
            )
            for d in answer["dead"]
        ]


def show_dead(
    config: Config, *, as_json: bool = False, out: TextIO | None = None, now: float | None = None
) -> int:
    """`mailq --dead`: root sees every kept message with its owner, a user their own."""
    from relay import deadletter
    from relay.queue import queue_dir

    out = out or sys.stdout
    when = time.time() if now is None else now
    found: list[DeadEntry] | None
    if os.geteuid() == 0:
        path = queue_dir(config.queue_dir)
        found = deadletter.spool_entries(path)
    else:
        # Only root's flush and pickup keep messages in a spool's dead area: a user's are
        # in the system spool, which mailx-relayd lists for them (it knows where it is).
        from relay.queue import SYSTEM_QUEUE_DIR

        answer = _service_listing()
        if answer is not None:
            path = str(answer["queue"])
        else:  # the configured system queue if this user may read the config, else the default
            path = queue_dir(config.queue_dir) if config.queue_dir else SYSTEM_QUEUE_DIR
        found = dead_entries_for(os.getuid(), path, answer)
    where = deadletter.spool_dir(path)
    if as_json:
        import json

        data: dict[str, Any] = {
            "dead": where,
            "entries": None
            if found is None
            else [
                {
                    "file": entry.path,
                    "uid": entry.owner,
                    "user": user_name(entry.owner),
                    "size": entry.size,
                    "kept_at": iso(entry.kept_at),
                    "reason": entry.reason,
                }
                for entry in found
            ],
        }
        if found is None:
            data["note"] = NOT_YOURS_DEAD
        out.write(json.dumps(data, indent=2) + "\n")
        return os.EX_OK
    if found is None:
        out.write(f"{where}: {NOT_YOURS_DEAD}\n")
        return os.EX_OK
    if not found:
        out.write(f"No messages kept in {where}\n")
        return os.EX_OK
    lines = [f"{'File':<40} {'Size':>7} {'Age':>5} {'User':<10} Reason"]
    for entry in found:
        lines.append(
            f"{entry.name:<40} {entry.size:>7} {ago(when - entry.kept_at):>5} "
            f"{user_name(entry.owner):<10} {entry.reason}"
        )
    lines.append(f"-- {len(found)} kept, in {where}")
    out.write("\n".join(lines) + "\n")
    return os.EX_OK


NOT_YOURS_DEAD = (
    "the spool's dead-letter area is root's; root's mailq --dead lists the messages kept "
    "there for you (root can hand them back)"
)


# -- flushing -----------------------------------------------------------------------------


def pickup_offline(config: Config, err: TextIO, prog: str = PROG) -> int:
    """Root's flush first takes what users left in the offline drop (relay.pickup).

    Returns a sysexits status: 0, or what a problem with a drop file or the spool warrants.
    Each problem is one line on `err`; the flush goes on whatever happened here.
    """
    if os.geteuid() != 0:
        return os.EX_OK  # the drop's files are other users' 0600 files: root's job
    from relay.pickup import pickup

    try:
        report = pickup(config)
    except RelayError as failed:
        say(err, f"offline drop not picked up: {failed}", prog)
        return failed.exit_code
    except Exception as failed:  # a bug must not stop the flush (or the service's start)
        from relay.errors import InternalError

        bug = InternalError(failed)
        say(err, f"offline drop not picked up: {bug}", prog)
        return bug.exit_code
    for line in report.lines():
        say(err, line, prog)
    return report.exit_code()


def run_flush(
    config: Config,
    *,
    force: bool = False,
    quiet: bool = False,
    verbose: bool = False,
    password: str | None = None,
    prog: str = PROG,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """`mailq --flush`, `sendmail -q`: deliver, report, and return the exit status.

    On a terminal, progress on stderr (sent, left, rate, current error); otherwise a
    summary line on stdout when anything was tried (none with `quiet`), and each
    permanent failure, expiry, quarantine or local error on stderr.
    """
    from relay.flush import flush

    out = out or sys.stdout
    err = err or sys.stderr
    tty = err.isatty()
    show_progress = _Progress(err, prog) if tty and not verbose else None
    secret: Callable[[], str | None] | None = None
    if password is not None:  # -ap on the sendmail command line

        def secret() -> str | None:
            return password

    picked = pickup_offline(config, err, prog)
    report = flush(
        config,
        password=secret,
        force=force,
        transcript=err if verbose else None,
        progress=show_progress,
    )
    if show_progress is not None:
        show_progress.finish()
    _report_problems(report, err, prog)
    tried = bool(report.due or report.expired or report.corrupt or report.errors or report.fatal)
    if (tried and not quiet) or (tty and not quiet):
        say(out, report.summary(), prog)
    return report.exit_code() or picked


def _report_problems(report: FlushReport, err: TextIO, prog: str) -> None:
    for failure in report.failed:
        say(err, f"{failure.id}: failed permanently: {failure.reason}; {_kept(failure)}", prog)
    for failure in report.expired:
        say(err, f"{failure.id}: {failure.reason}; {_kept(failure)}", prog)
    for bad in report.corrupt:
        say(err, f"{bad.id}: corrupt, moved to the queue's corrupt/: {bad.reason}", prog)
    for problem in report.errors:
        say(err, str(problem), prog)
    if report.fatal is not None:
        say(err, f"{report.fatal}; the entries stay queued", prog)


def _kept(failure: Any) -> str:
    return f"message saved to {failure.saved_to}" if failure.saved_to else "message not saved"


class _Progress:
    """One self-overwriting status line on a terminal: sent, left, rate, current error."""

    def __init__(self, stream: TextIO, prog: str) -> None:
        self.stream = stream
        self.prog = prog
        self.shown = False

    def __call__(self, report: FlushReport) -> None:
        elapsed = max(time.monotonic() - report.started, 1e-6)
        left = max(report.queued - report.seen, 0)  # not yet looked at
        line = f"{self.prog}: {report.sent} sent, {left} left, {report.sent / elapsed:.1f}/s"
        if report.current_error:
            line += f"  [{report.current_error[:70]}]"
        # \r and "erase to end of line": the next update overwrites this one.
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


# -- deleting -----------------------------------------------------------------------------


def delete(
    config: Config, wanted: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """`mailq --delete ID...`: each entry to its dead.letter, then out of the queue.

    Each problem is one line on `err` and the command goes on with the next ID; the
    status is that of the first problem."""
    from relay.queue import Queue, queue_dir

    out = out or sys.stdout
    err = err or sys.stderr
    problems: list[RelayError] = []

    def problem(failure: RelayError) -> None:
        say(err, failure.describe())
        problems.append(failure)

    try:
        queue = Queue.open(queue_dir(config.queue_dir), create=False)
    except FileNotFoundError:
        for name in wanted:
            problem(NoInputError(f"no queue entry '{name}' (the queue is empty)"))
        return problems[0].exit_code if problems else os.EX_OK
    with queue:
        for name in wanted:
            try:
                found = queue.find(name)
                locked = queue.lock(found)
            except KeyError as missing:
                problem(NoInputError(str(missing.args[0])))
                continue
            except ValueError as bad:
                problem(DataError(f"{name}: corrupt entry, not deleted: {bad}"))
                continue
            if locked is None:
                if queue.has(found):
                    problem(
                        TempFailError(f"{found}: being delivered right now; try again in a moment")
                    )
                else:
                    say(err, f"{found}: left the queue meanwhile (delivered)")
                continue
            with locked:
                try:
                    saved = locked.to_dead_letter("deleted from the queue with mailq --delete")
                    locked.remove()
                except RelayError as failed:
                    say(err, f"{found}: {failed.describe()}; the entry stays queued")
                    problems.append(failed)
                    continue
            say(out, f"{found}: moved to {saved}")
    return problems[0].exit_code if problems else os.EX_OK
