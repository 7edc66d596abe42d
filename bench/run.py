"""`make bench`: mailx-relay against msmtp (and s-nail), side by side, targets T1-T9.

Why it matters: docs/architecture.md. Every scenario runs the candidate and the baseline in turns
(candidate first on even rounds, baseline first on odd ones), after one unmeasured warm-up
each, against the bench's own loopback server (`bench/server.py`). Wall time is taken
around each child process. Peak RSS comes from the warm-up run, made under
`/usr/bin/time -f %M` (a child forked from this big process would report this process's
RSS as its own peak until its exec).

The candidate is the installed form by default: a venv of the system python3 with
`pip install .` (not editable), as `make install` builds it, kept in bench/build/ and
rebuilt when the sources change. `BENCH_CANDIDATE=dev` measures the development venv
(`.venv`, editable install: its import finder and its interpreter add start-up time).

Environment: BENCH_N (rounds per scenario, default 11), BENCH_BIG_N (rounds for the
20 MiB scenarios, default 15), BENCH_T5_COUNT (messages in the T5 queue, default 1000),
BENCH_T5_N (T5 rounds, default 1), BENCH_ONLY (e.g. "T1,T6", or "growth" for the queue
growth figures of bench/growth.py alone), BENCH_GROWTH (its queue sizes, default
"1000,10000,100000"), BENCH_RAW (a file to write every run's time to, JSON),
INSTALL_PYTHON.

Why 15 rounds for the 20 MiB scenarios: on the shared 2-CPU machine, three runs of 5
rounds gave T6 ratios of 0.30, 0.34 and 0.36 x, three of 15 rounds 0.34, 0.31 and 0.32 x
(T7 0.40-0.44 against 0.43-0.47); a round of T6 and T7 costs about 2 s.

T3q is T3 against the immediate-ACK server: TLS and AUTH cost without the delayed-ACK
wait that hides it, both clients verifying the server's certificate against the CA.

T9 compares mailx-relay with itself: an unprivileged user (uid 65534, who may not read the
configuration) sending through a running `mailx-relayd`, against root's in-process send
of the same message to the same immediate-ACK server. Both sides start under `setpriv`
(the user's to drop to 65534, root's to stay root) so the exec costs match. T9 needs root.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / "build"
MIB = 1 << 20

N = int(os.environ.get("BENCH_N", "11"))
BIG_N = int(os.environ.get("BENCH_BIG_N", "15"))
T5_COUNT = int(os.environ.get("BENCH_T5_COUNT", "1000"))
T5_N = int(os.environ.get("BENCH_T5_N", "1"))
BIG_MIB = int(os.environ.get("BENCH_BIG_MIB", "20"))
ONLY = {s.strip().upper() for s in os.environ.get("BENCH_ONLY", "").split(",") if s.strip()}
CANDIDATE = os.environ.get("BENCH_CANDIDATE", "installed")
#: BENCH_RAW=FILE: every measured run (scenario, side, round, wall s) as JSON, for checks
#: of the spread such as the per-round (paired) ratios.
RAW = os.environ.get("BENCH_RAW", "")
FORBIDDEN = ("email", "ssl", "smtplib", "typing", "re", "dataclasses")


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


# -- tools ----------------------------------------------------------------------------------


def ensure_tools() -> None:
    """msmtp and s-nail from Debian; never msmtp-mta (it would take /usr/sbin/sendmail)."""
    missing = [name for name in ("msmtp", "s-nail") if shutil.which(name) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(f"bench: {', '.join(missing)} missing: apt-get install msmtp s-nail")
    say(f"installing {' '.join(missing)} from Debian")
    command = ["apt-get", "install", "-y", "--no-install-recommends", "msmtp", "s-nail"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=False).returncode:
        subprocess.run(["apt-get", "update"], env=env, stdout=subprocess.DEVNULL, check=True)
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=True)


def version_of(argv: Sequence[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def source_hash() -> str:
    digest = hashlib.sha256()
    tools = [ROOT / "tools" / "install.sh", ROOT / "tools" / "entry_scripts.py"]
    for path in sorted(
        [ROOT / "pyproject.toml", *tools, *ROOT.glob("relay/*.py"), *ROOT.glob("mailx/*.py")]
    ):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def reachable_by_everyone(path: Path) -> bool:
    """Whether every directory above `path` lets any user through (o+x)."""
    return all(os.stat(parent).st_mode & stat.S_IXOTH for parent in path.parents)


def build_dir() -> Path:
    """Where the installed form is built: bench/build, or /var/tmp when that is out of reach.

    T9 runs the installed `sendmail` as uid 65534, which must be able to reach it: a clone
    inside a 0700 directory (a `mktemp -d`, a private home) cannot be, so the build goes to
    a directory of its own under /var/tmp, named after the checkout so that a second
    `make bench` of the same sources reuses it. That directory is created 0755 by this
    user; anything else found under its name (a symlink, another owner, a writable mode)
    is refused rather than trusted.
    """
    if reachable_by_everyone(BUILD):
        return BUILD
    name = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    build = Path("/var/tmp") / f"mailx-relay-bench-{os.geteuid()}-{name}"
    with contextlib.suppress(FileExistsError):
        build.mkdir(mode=0o755)
    info = os.lstat(build)
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise SystemExit(f"bench: {build} is not a directory of ours (0755): remove it")
    build.chmod(0o755)
    say(f"{BUILD} is out of reach of uid 65534 (T9): building the installed form in {build}")
    return build


def candidate_bin() -> Path:
    """The directory of the candidate's commands (installed form unless BENCH_CANDIDATE=dev).

    The installed form is built by tools/install.sh itself, PREFIX=bench/build, touching
    nothing outside it (SBIN and LINK_BIN empty, units and spool inside): the commands are
    exactly what `make install` lays out, our own entry scripts (tools/entry_scripts.py)
    included.
    """
    if CANDIDATE == "dev":
        return ROOT / ".venv" / "bin"
    python = os.environ.get("INSTALL_PYTHON") or (
        "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    )
    build = build_dir()
    venv = build / "venv"
    stamp = venv / ".bench-source"
    wanted = source_hash() + " " + python
    if stamp.exists() and stamp.read_text() == wanted:
        return venv / "bin"
    say(f"building the installed form: PREFIX={build} INSTALL_PYTHON={python} tools/install.sh")
    shutil.rmtree(build, ignore_errors=True)
    env = dict(
        os.environ, PREFIX=str(build), DESTDIR="", SBIN="", LINK_BIN="", INSTALL_PYTHON=python,
        UNIT_DIR=str(build / "units"), SPOOL_DIR=str(build / "spool"), ALTERNATIVES="",
    )  # fmt: skip
    done = subprocess.run(
        ["sh", str(ROOT / "tools" / "install.sh")], env=env, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"bench: tools/install.sh failed:\n{done.stdout}{done.stderr}")
    stamp.write_text(wanted)
    return venv / "bin"


def importtime_argv(argv: Sequence[str], at: int = 0) -> list[str]:
    """`argv` with the command `argv[at]` run with `-X importtime`, as its #! line runs it.

    An installed command runs `python -IS`, and -I ignores PYTHONPROFILEIMPORTTIME: the
    option goes on the command line, after the interpreter and the #! line's argument.
    `at` skips a prefix such as `setpriv ...`.
    """
    script = Path(argv[at])
    with open(script, "rb") as source:
        first = source.readline()
    if not first.startswith(b"#!") or first.startswith(b"#!/bin/sh"):
        raise SystemExit(f"bench: {script} is not a Python script with a #! line")
    interpreter, _, flags = first[2:].decode().strip().partition(" ")
    command = [interpreter, *([flags] if flags else []), "-X", "importtime", str(script)]
    return [*argv[:at], *command, *argv[at + 1 :]]


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Run:
    wall: float
    rss_kib: int


@dataclass
class Side:
    name: str
    runs: list[Run] = field(default_factory=list)
    peak_kib: int = 0

    def median(self) -> float:
        return statistics.median(r.wall for r in self.runs)

    def span(self) -> str:
        walls = [r.wall for r in self.runs]
        return f"{fmt(min(walls))}-{fmt(max(walls))}"

    def rss_mib(self) -> float:
        return self.peak_kib / 1024


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.1f}" if seconds < 10 else f"{seconds:.2f}s"


def run_once(
    argv: Sequence[str],
    *,
    stdin: Path | None,
    env: dict[str, str],
    rss: bool = False,
    check: bool = True,
) -> Run:
    """One child: wall time around fork..wait; with `rss`, its peak RSS (else 0)."""
    err = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
    report = None
    if rss:
        report = tempfile.NamedTemporaryFile(prefix="bench-rss-")  # noqa: SIM115
        argv = ["/usr/bin/time", "-f", "%M", "-o", report.name, *argv]
    with open(stdin or os.devnull, "rb") as feed:
        started = time.perf_counter()
        child = subprocess.Popen(
            argv, stdin=feed, stdout=subprocess.DEVNULL, stderr=err, env=env, close_fds=True
        )
        _pid, status = os.waitpid(child.pid, 0)
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if check and child.returncode != 0:
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
        raise SystemExit(f"bench: {' '.join(argv)} exited {child.returncode}:\n{text}")
    err.close()
    peak = 0
    if report is not None:
        with report:
            peak = int(report.read().split()[-1])
    return Run(wall, peak)


@dataclass
class Scenario:
    id: str
    title: str
    target: str
    candidate: Callable[[bool], Run]
    baseline: Callable[[bool], Run]
    baseline_name: str
    judge: Callable[[Side, Side], tuple[bool, str]]
    rounds: int = N
    #: Messages the server must receive per run (checked on every run).
    messages: int = 1
    #: Long scenarios: no warm-up, RSS taken in the measured rounds.
    warm_up: bool = True


@dataclass
class Row:
    scenario: Scenario
    cand: Side
    base: Side
    met: bool
    why: str
    #: The server's busiest share of one core during a run: (candidate, baseline).
    server_cpu: tuple[float, float] = (0.0, 0.0)


class Server:
    def __init__(self, cert: Path, key: Path) -> None:
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        self.proc = subprocess.Popen(
            [python, str(HERE / "server.py"), "--cert", str(cert), "--key", str(key)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.ports: dict[str, int] = json.loads(self.proc.stdout.readline())

    def stats(self) -> dict[str, float]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())  # type: ignore[no-any-return]

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def measure(scenario: Scenario, server: Server) -> Row:
    cand, base = Side("candidate"), Side(scenario.baseline_name)
    say(f"{scenario.id}: {scenario.title} ({scenario.rounds} rounds)")

    rss = {cand.name: 0, base.name: 0}

    def checked(side: Side | None, fn: Callable[[bool], Run], name: str = "") -> float:
        before = server.stats()
        result = fn(side is None or not scenario.warm_up)
        rss[side.name if side else name] = max(rss[side.name if side else name], result.rss_kib)
        after = server.stats()
        got = after["messages"] - before["messages"]
        if got != scenario.messages:
            raise SystemExit(
                f"bench: {scenario.id} {side.name if side else 'warm-up'}: the server "
                f"received {got} messages, expected {scenario.messages}"
            )
        if after["errors"] != before["errors"]:
            raise SystemExit(f"bench: {scenario.id}: the server saw a protocol error")
        if side is not None:
            side.runs.append(result)
        return after["cpu"] - before["cpu"]

    if scenario.warm_up:
        checked(None, scenario.candidate, cand.name)
        checked(None, scenario.baseline, base.name)
    server_cpu = {cand.name: 0.0, base.name: 0.0}
    for index in range(scenario.rounds):
        order = [(cand, scenario.candidate), (base, scenario.baseline)]
        for side, fn in order if index % 2 == 0 else reversed(order):
            cpu = checked(side, fn)
            share = cpu / max(side.runs[-1].wall, 1e-9)
            server_cpu[side.name] = max(server_cpu[side.name], share)
    cand.peak_kib, base.peak_kib = rss[cand.name], rss[base.name]
    met, why = scenario.judge(cand, base)
    return Row(scenario, cand, base, met, why, (server_cpu[cand.name], server_cpu[base.name]))


def ratio_at_most(limit: float) -> Callable[[Side, Side], tuple[bool, str]]:
    def judge(cand: Side, base: Side) -> tuple[bool, str]:
        ratio = cand.median() / base.median()
        if ratio <= limit:
            return True, "met"
        return False, f"missed: {ratio:.3f} x > {limit:g} x"  # 0.300 > 0.3, not 0.30 > 0.3

    return judge


def faster_by(factor: float) -> Callable[[Side, Side], tuple[bool, str]]:
    def judge(cand: Side, base: Side) -> tuple[bool, str]:
        speedup = base.median() / cand.median()
        if speedup >= factor:
            return True, f"met ({speedup:.0f} x faster)"
        return False, f"missed: only {speedup:.1f} x faster (< {factor:g} x)"

    return judge


def and_rss(
    judge: Callable[[Side, Side], tuple[bool, str]], mib: float
) -> Callable[[Side, Side], tuple[bool, str]]:
    def both(cand: Side, base: Side) -> tuple[bool, str]:
        met, why = judge(cand, base)
        rss = cand.rss_mib()
        if rss > mib:
            reason = f"peak RSS {rss:.1f} MiB > {mib:g} MiB"
            return False, (f"{why}; {reason}" if not met else f"missed: {reason}")
        return met, why

    return both


# -- the fixtures ---------------------------------------------------------------------------


class Bench:
    def __init__(self, work: Path, bin_dir: Path) -> None:
        self.work = work
        self.bin = bin_dir
        self.make_certs()
        self.server = Server(self.cert, self.key)
        self.ports = self.server.ports
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work / "home"),
            "LANG": "C.UTF-8",
            "MAILX_NO_SYSTEM_RC": "1",
        }
        (work / "home").mkdir()
        self.write_configs()
        self.write_messages()

    def make_certs(self) -> None:
        import trustme

        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        self.ca = self.work / "ca.pem"
        self.cert = self.work / "server.pem"
        self.key = self.work / "server.key"
        ca.cert_pem.write_to_path(str(self.ca))
        leaf.cert_chain_pems[0].write_to_path(str(self.cert))
        for extra in leaf.cert_chain_pems[1:]:
            with open(self.cert, "ab") as out:
                out.write(extra.bytes())
        leaf.private_key_pem.write_to_path(str(self.key))

    def write_configs(self) -> None:
        for mode, port in self.ports.items():
            relay = [
                f"mailhub=127.0.0.1:{port}",
                "root=postmaster@example.org",
                "rewriteDomain=example.org",
                "hostname=bench.example.org",
                "FromLineOverride=yes",
                "Timeout=30",
                f"QueueDir={self.work / ('queue-' + mode)}",
            ]
            msmtp = [
                "defaults",
                "logfile",
                "syslog off",
                "account bench",
                "host 127.0.0.1",
                f"port {port}",
                "from bench@example.org",
                "timeout 30",
            ]
            if mode in ("tls", "quicktls"):
                relay += ["UseSTARTTLS=yes", f"TLS_CA_File={self.ca}", "AuthUser=bench",
                          "AuthPass=bench-password"]  # fmt: skip
                msmtp += ["tls on", "tls_starttls on", f"tls_trust_file {self.ca}",
                          "auth plain", "user bench", "password bench-password"]  # fmt: skip
            else:
                msmtp += ["tls off", "auth off"]
            msmtp += ["account default : bench"]
            path = self.work / f"relay-{mode}.conf"
            path.write_text("\n".join(relay) + "\n")
            path.chmod(0o600)
            path = self.work / f"msmtprc-{mode}"
            path.write_text("\n".join(msmtp) + "\n")
            path.chmod(0o600)
        always = (self.work / "relay-tls.conf").read_text() + "Queue=always\n"
        (self.work / "relay-tls-always.conf").write_text(always)
        (self.work / "relay-tls-always.conf").chmod(0o600)
        alias = "alias user 'Bench User <someone@example.com>'\n"
        (self.work / "mailrc").write_text(alias)
        msmtp = f"{shutil.which('msmtp')}"
        (self.work / "snailrc").write_text(
            alias
            + f"set mta={msmtp}\n"
            + f"set mta-arguments='-C {self.work / 'msmtprc-plain'}'\n"
            + "set nosave\nset from=bench@example.org\n"
        )

    def write_messages(self) -> None:
        small = (
            "From: Cron Daemon <root@bench.example.org>\n"
            "To: someone@example.com\n"
            "Subject: Cron <root@host> run-parts /etc/cron.daily\n"
            'Content-Type: text/plain; charset="UTF-8"\n'
            "\n" + "".join(f"/etc/cron.daily/job{i}: done in {i * 7 % 13} s\n" for i in range(20))
        )
        self.small = self.work / "small.eml"
        self.small.write_text(small)
        self.body = self.work / "body.txt"
        self.body.write_text("disk usage on /: 91%\nfree: 2.1 GiB\n")
        # 20 MiB of text lines as an encoder writes them, LF line ends (as programs give
        # sendmail), with lines starting with a dot to stuff.
        rng = random.Random(7)
        self.big = self.work / "big.eml"
        line = bytes(rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                     for _ in range(76))  # fmt: skip
        with open(self.big, "wb") as out:
            out.write(b"From: backup@bench.example.org\nTo: someone@example.com\n")
            out.write(b"Subject: nightly dump\nMIME-Version: 1.0\n")
            out.write(b"Content-Type: text/plain; charset=us-ascii\n\n")
            written = 0
            count = 0
            while written < BIG_MIB * MIB:
                text = (b"." + line[1:] if count % 100 == 0 else line) + b"\n"
                out.write(text)
                written += len(text)
                count += 1
        self.attachment = self.work / "dump.bin"
        self.attachment.write_bytes(rng.randbytes(BIG_MIB * MIB))

    # -- the commands ---------------------------------------------------------------------

    def sendmail(self, mode: str, message: Path) -> Callable[[bool], Run]:
        argv = [str(self.bin / "sendmail"), "-C", str(self.work / f"relay-{mode}.conf"),
                "someone@example.com"]  # fmt: skip
        return lambda rss: run_once(argv, stdin=message, env=self.env, rss=rss)

    def msmtp(self, mode: str, message: Path) -> Callable[[bool], Run]:
        argv = ["msmtp", "-C", str(self.work / f"msmtprc-{mode}"), "someone@example.com"]
        return lambda rss: run_once(argv, stdin=message, env=self.env, rss=rss)

    def mail(self, *extra: str) -> Callable[[bool], Run]:
        argv = [str(self.bin / "mail"), "-n", "-s", "backup report", *extra, "user"]
        env = dict(self.env, MAILRC=str(self.work / "mailrc"),
                   RELAY_CONFIG=str(self.work / "relay-plain.conf"))  # fmt: skip
        return lambda rss: run_once(argv, stdin=self.body, env=env, rss=rss)

    def snail(self, *extra: str) -> Callable[[bool], Run]:
        argv = ["s-nail", "-n", "-s", "backup report", *extra, "user"]
        env = dict(self.env, MAILRC=str(self.work / "snailrc"))
        return lambda rss: run_once(argv, stdin=self.body, env=env, rss=rss)

    # T9: an unprivileged sender through the submission service, and root beside it.
    def start_service(self) -> None:
        # The socket's directory must be reachable by uid 65534; the work dir is not
        # (so neither is the configuration, which is the point).
        self.run_dir = Path(tempfile.mkdtemp(prefix="mailx-relay-bench-run-"))
        self.run_dir.chmod(0o755)
        self.socket = self.run_dir / "submit.sock"
        self.service = subprocess.Popen(
            [str(self.bin / "mailx-relayd"), "-C", str(self.work / "relay-quickack.conf"),
             "--socket", str(self.socket)],
            env=dict(self.env, RELAY_OFFLINE=str(self.run_dir / "offline")),
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import socket

        for _ in range(200):
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(self.socket))
                    return
                except OSError:
                    time.sleep(0.05)
        raise SystemExit("bench: T9: mailx-relayd did not start")

    def stop_service(self) -> None:
        self.service.terminate()
        self.service.wait(timeout=30)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def as_user(self, message: Path) -> Callable[[bool], Run]:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                str(self.bin / "sendmail"), "someone@example.com"]  # fmt: skip
        env = dict(self.env, RELAY_CONFIG=str(self.work / "relay-quickack.conf"),
                   RELAY_SOCKET=str(self.socket), HOME=str(self.run_dir))  # fmt: skip
        return lambda rss: run_once(argv, stdin=message, env=env, rss=rss)

    def as_root(self, message: Path) -> Callable[[bool], Run]:
        argv = ["setpriv", "--reuid=0", "--regid=0", "--keep-groups", str(self.bin / "sendmail"),
                "-C", str(self.work / "relay-quickack.conf"), "someone@example.com"]  # fmt: skip
        return lambda rss: run_once(argv, stdin=message, env=self.env, rss=rss)

    # T5: a queue of T5_COUNT messages, filled once, copied before each flush.
    def fill_queue(self) -> Path:
        template = self.work / "queue-template"
        script = (
            "import sys, relay\n"
            "config = relay.load_config(sys.argv[1])\n"
            "body = open(sys.argv[2], 'rb').read()\n"
            "for i in range(int(sys.argv[3])):\n"
            "    relay.submit(body.replace(b'Subject: ', b'Subject: %d ' % i, 1),\n"
            "                 config=config, recipients=['someone@example.com'])\n"
        )
        conf = self.work / "relay-fill.conf"
        conf.write_text(
            (self.work / "relay-tls-always.conf")
            .read_text()
            .replace(f"QueueDir={self.work / 'queue-tls'}", f"QueueDir={template}")
        )
        conf.chmod(0o600)
        say(f"T5: queueing {T5_COUNT} messages")
        subprocess.run(
            [str(self.bin / "python"), "-c", script, str(conf), str(self.small), str(T5_COUNT)],
            env=self.env,
            check=True,
        )
        return template

    def flush(self, template: Path) -> Callable[[bool], Run]:
        queue = self.work / "queue-tls"
        argv = [str(self.bin / "mailq"), "--flush", "--quiet", "-C",
                str(self.work / "relay-tls.conf")]  # fmt: skip

        def go(rss: bool) -> Run:
            shutil.rmtree(queue, ignore_errors=True)
            shutil.copytree(template, queue, symlinks=True)
            result = run_once(argv, stdin=None, env=self.env, rss=rss)
            left = [p for p in (queue / "new").iterdir()] if (queue / "new").exists() else []
            if left:
                raise SystemExit(f"bench: T5: {len(left)} files left in the queue after --flush")
            return result

        return go

    def msmtp_many(self) -> Callable[[bool], Run]:
        one = self.msmtp("tls", self.small)

        def go(rss: bool) -> Run:
            started = time.perf_counter()
            # The first under /usr/bin/time for its peak RSS: ~1 ms in all, against seconds.
            peak = one(rss).rss_kib
            for _ in range(T5_COUNT - 1):
                one(False)
            return Run(time.perf_counter() - started, peak)

        return go

    # T8: start-up paths that must import none of ssl, smtplib, email.
    def startup(self) -> list[tuple[str, list[str], dict[str, str]]]:
        empty = self.work / "relay-empty.conf"
        empty.write_text(
            (self.work / "relay-plain.conf").read_text() + f"QueueDir={self.work / 'nothing'}\n"
        )
        empty.chmod(0o600)
        mailrc = dict(self.env, MAILRC=str(self.work / "mailrc"))
        return [
            ("sendmail -V", [str(self.bin / "sendmail"), "-V"], self.env),
            ("sendmail -Z (usage)", [str(self.bin / "sendmail"), "-Z"], self.env),
            ("mailq, empty", [str(self.bin / "mailq"), "-C", str(empty)], self.env),
            ("mail (usage)", [str(self.bin / "mail")], mailrc),
        ]


def imported(argv: Sequence[str], env: dict[str, str]) -> tuple[list[str], float]:
    """Modules a command imports (`-X importtime`) and their total import time."""
    out = subprocess.run(
        importtime_argv(argv), env=env, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    names, total = [], 0
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = line.split(":", 1)[1].split("|")
        names.append(name.strip())
        if not name.startswith("  "):  # a top-level import: its cumulative counts once
            total += int(cumulative)
    return names, total / 1e6


def forbidden(names: Sequence[str]) -> list[str]:
    """The FORBIDDEN packages among `names` (a submodule counts as its package)."""
    return sorted({n.split(".")[0] for n in names if n.split(".")[0] in FORBIDDEN})


# -- the table ------------------------------------------------------------------------------

Startup = tuple[str, float, float, int, list[str]]  # path, wall s, import ms, modules, forbidden


def table(rows: Sequence[Row], startup: Sequence[Startup]) -> str:
    head = (
        f"{'id':<3} {'scenario':<40} {'candidate ms':>22} {'baseline ms':>22} {'ratio':>6} "
        f"{'RSS MiB':>11} {'target':<30} verdict"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        sc = row.scenario
        ratio = row.cand.median() / row.base.median()
        cand = f"{fmt(row.cand.median())} ({row.cand.span()})"
        base = f"{fmt(row.base.median())} ({row.base.span()})"
        rss = f"{row.cand.rss_mib():.0f}/{row.base.rss_mib():.0f}"
        lines.append(
            f"{sc.id:<3} {sc.title:<40} {cand:>22} {base:>22} {ratio:>6.2f} {rss:>11} "
            f"{sc.target:<30} {row.why}"
        )
    if startup:
        lines.append(f"{'T8':<3} start-up paths import none of {', '.join(FORBIDDEN)}")
        lines.append(
            f"{'':<3} {'path':<24} {'wall ms':>8} {'imports ms':>11} {'modules':>8}  verdict"
        )
        for name, wall, ms, count, mods in startup:
            verdict = "met" if not mods else "missed: imports " + ", ".join(mods)
            lines.append(f"{'':<3} {name:<24} {fmt(wall):>8} {ms:>11.1f} {count:>8}  {verdict}")
    return "\n".join(lines)


def main() -> int:
    ensure_tools()
    bin_dir = candidate_bin()
    py = version_of([str(bin_dir / "python"), "--version"])
    machine = (
        f"{os.cpu_count()} CPUs ({os.uname().machine}), {py} ({CANDIDATE} candidate: "
        f"{bin_dir}), {version_of(['msmtp', '--version'])}, "
        f"{version_of(['s-nail', '-V'])}"
    )
    work = Path(tempfile.mkdtemp(prefix="mailx-relay-bench-"))
    bench = Bench(work, bin_dir)
    try:
        rows = run_all(bench)
        startup = run_startup(bench)
        grown, grown_missed = run_growth(bench)
        stats = bench.server.stats()
    finally:
        bench.server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {machine}")
    print(
        f"rounds: BENCH_N={N}, BENCH_BIG_N={BIG_N}, BENCH_T5_N={T5_N} x {T5_COUNT} messages; "
        "times are medians (min-max) of whole processes in ms; RSS is peak, candidate/baseline"
    )
    print(table(rows, startup))
    busiest = ", ".join(
        f"{row.scenario.id} {row.server_cpu[0] * 100:.0f}/{row.server_cpu[1] * 100:.0f}"
        for row in rows
    )
    print(
        f"server: {int(stats['messages'])} messages, {int(stats['connections'])} connections, "
        f"{stats['cpu']:.2f} s CPU in all; its busiest share of one core during a run, "
        f"candidate/baseline, in %: {busiest or '-'} (never the bottleneck when well below 100)"
    )
    if grown:
        print("growth (sendmail and --flush against the immediate-ACK server; ms, s, MiB):")
        print(grown)
    missed = [row.scenario.id for row in rows if not row.met]
    if grown_missed:
        missed.append("growth")
    if any(mods for *_rest, mods in startup):
        missed.append("T8")
    print(f"targets missed: {', '.join(missed) if missed else 'none'}")
    if RAW:
        raw = {
            row.scenario.id: {
                side.name: [r.wall for r in side.runs] for side in (row.cand, row.base)
            }
            for row in rows
        }
        Path(RAW).write_text(json.dumps(raw, indent=1) + "\n")
    return 0


def wanted(scenario_id: str) -> bool:
    return not ONLY or scenario_id.upper() in ONLY


def run_all(bench: Bench) -> list[Row]:
    scenarios = [
        Scenario("T1", "sendmail, small message, plain SMTP", "<= 0.6 x msmtp",
                 bench.sendmail("plain", bench.small), bench.msmtp("plain", bench.small),
                 "msmtp", ratio_at_most(0.6)),
        Scenario("T2", "same, server with immediate ACKs", "<= 3.0 x msmtp",
                 bench.sendmail("quickack", bench.small), bench.msmtp("quickack", bench.small),
                 "msmtp", ratio_at_most(3.0)),
        Scenario("T3", "STARTTLS + AUTH, small message", "<= 0.6 x msmtp",
                 bench.sendmail("tls", bench.small), bench.msmtp("tls", bench.small),
                 "msmtp", ratio_at_most(0.6)),
        Scenario("T3q", "same, server with immediate ACKs", "<= 0.8 x msmtp",
                 bench.sendmail("quicktls", bench.small), bench.msmtp("quicktls", bench.small),
                 "msmtp", ratio_at_most(0.8)),
        Scenario("T4", "mail -s x user (alias)", "<= 0.7 x s-nail | msmtp",
                 bench.mail(), bench.snail(), "s-nail", ratio_at_most(0.7)),
        Scenario("T6", f"sendmail, {BIG_MIB} MiB message", "<= 0.3 x msmtp, RSS <= 20 MiB",
                 bench.sendmail("plain", bench.big), bench.msmtp("plain", bench.big),
                 "msmtp", and_rss(ratio_at_most(0.3), 20), rounds=BIG_N),
        Scenario("T7", f"mail -a {BIG_MIB} MiB file", "<= 0.4 x s-nail, RSS <= 32 MiB",
                 bench.mail("-a", str(bench.attachment)),
                 bench.snail("-a", str(bench.attachment)),
                 "s-nail", and_rss(ratio_at_most(0.4), 32), rounds=BIG_N),
    ]  # fmt: skip
    rows = [measure(s, bench.server) for s in scenarios if wanted(s.id)]
    if wanted("T5"):
        template = bench.fill_queue()
        t5 = Scenario(
            "T5", f"flush {T5_COUNT} queued, STARTTLS + AUTH", ">= 100 x faster than msmtp",
            bench.flush(template), bench.msmtp_many(), f"{T5_COUNT} x msmtp", faster_by(100),
            rounds=T5_N, messages=T5_COUNT, warm_up=False,
        )  # fmt: skip
        rows.append(measure(t5, bench.server))
    if wanted("T9"):
        if os.geteuid() != 0 or shutil.which("setpriv") is None:
            say("T9: skipped (needs root and setpriv to run a sender as uid 65534)")
        else:
            bench.start_service()
            try:
                t9 = Scenario(
                    "T9", "unprivileged sendmail via mailx-relayd", "<= 1.2 x root in-process",
                    bench.as_user(bench.small), bench.as_root(bench.small), "root",
                    ratio_at_most(1.2),
                )  # fmt: skip
                rows.append(measure(t9, bench.server))
            finally:
                bench.stop_service()
    rows.sort(key=lambda row: row.scenario.id)
    return rows


def run_growth(bench: Bench) -> tuple[str, list[str]]:
    if not wanted("GROWTH"):
        return "", []
    import growth

    points = growth.run_growth(bench, N, run_once)
    return growth.table(points), growth.verdicts(points)


def run_startup(bench: Bench) -> list[Startup]:
    if not wanted("T8"):
        return []
    say("T8: start-up paths")
    out = []
    for name, argv, env in bench.startup():
        walls = []
        for _ in range(N):
            started = time.perf_counter()
            subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           check=False)  # fmt: skip
            walls.append(time.perf_counter() - started)
        names, import_s = imported(argv, env)
        out.append((name, statistics.median(walls), import_s * 1000, len(names), forbidden(names)))
    return out


if __name__ == "__main__":
    sys.exit(main())
