"""The map of start-up cost: what each hot path imports, and what the imports cost.

Run: `.venv/bin/python bench/importmap.py [BIN ...]` (default: the installed form that
`make bench` builds in bench/build/venv/bin, then the development venv's .venv/bin). For
each path it prints the median wall time of BENCH_N runs, the total import time and
module count (`-X importtime` on the command line, after the #! line's own options, so
that the entry script's imports are counted and `-I` cannot ignore it), and the modules
sorted by self time. `--json FILE` also writes every module list, which is what
docs/performance.md was written from.

Paths: `sendmail` sending a small message (immediate-ACK server from bench/server.py),
`sendmail -V`, a usage error, `mailq` on an empty queue, `echo body | mail -s subj alias`
with an alias book, the same send by uid 65534 handed to a running `mailx-relayd` (root
and setpriv only), and the interpreter's floor (`python -I -S -c pass`, `python -c pass`).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import build_dir, importtime_argv

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
N = int(os.environ.get("BENCH_N", "11"))
MESSAGE = (
    b"From: Cron Daemon <root@bench.example.org>\nTo: someone@example.com\n"
    b"Subject: Cron <root@host> run-parts /etc/cron.daily\n\n"
    + b"".join(b"/etc/cron.daily/job%d: done\n" % i for i in range(20))
)


def imports(stderr: str) -> tuple[list[tuple[str, int, int]], float]:
    """(module, self us, cumulative us) in import order, and the total import time (ms)."""
    rows, total = [], 0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cumulative, name = line.split(":", 1)[1].split("|")
        rows.append((name.strip(), int(own), int(cumulative)))
        if not name.startswith("  "):
            total += int(cumulative)
    return rows, total / 1000


def measure(
    argv: list[str], env: dict[str, str], stdin: bytes = b""
) -> tuple[float, list[tuple[str, int, int]], float]:
    walls = []
    for _ in range(N):
        started = time.perf_counter()
        subprocess.run(argv, input=stdin, env=env, capture_output=True, check=False)
        walls.append(time.perf_counter() - started)
    # The command as its #! line runs it, plus -X importtime (the installed commands run
    # `python -IS`: -I ignores PYTHONPROFILEIMPORTTIME). A bare interpreter as is.
    at = 4 if argv[0] == "setpriv" else 0
    timed = (
        [argv[0], "-X", "importtime", *argv[1:]]
        if argv[0].endswith("python")
        else importtime_argv(argv, at)
    )
    done = subprocess.run(timed, input=stdin, env=env, capture_output=True, check=False)
    rows, total = imports(done.stderr.decode("utf-8", "replace"))
    return statistics.median(walls) * 1000, rows, total


def main() -> int:
    args = sys.argv[1:]
    out_json = None
    if "--json" in args:
        at = args.index("--json")
        out_json = args[at + 1]
        del args[at : at + 2]
    bins = [Path(a) for a in args] or [build_dir() / "venv" / "bin", ROOT / ".venv" / "bin"]
    work = Path(tempfile.mkdtemp(prefix="mailx-relay-importmap-"))
    work.chmod(0o755)
    server = subprocess.Popen(
        ["/usr/bin/python3", str(HERE / "server.py"), "--modes", "quickack"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    port = json.loads(server.stdout.readline())["quickack"]
    conf = work / "relay.conf"
    conf.write_text(
        f"mailhub=127.0.0.1:{port}\nroot=postmaster@example.org\nrewriteDomain=example.org\n"
        f"hostname=bench.example.org\nFromLineOverride=yes\nQueueDir={work / 'queue'}\n"
    )
    conf.chmod(0o600)
    (work / "mailrc").write_text("alias user 'Bench User <someone@example.com>'\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8",
           "MAILX_NO_SYSTEM_RC": "1"}  # fmt: skip
    mail_env = dict(env, MAILRC=str(work / "mailrc"), RELAY_CONFIG=str(conf))
    report: dict[str, dict[str, object]] = {}
    try:
        for bin_dir in bins:
            py = str(bin_dir / "python")
            paths: list[tuple[str, list[str], dict[str, str], bytes]] = [
                ("python -I -S -c pass", [py, "-I", "-S", "-c", "pass"], env, b""),
                ("python -c pass", [py, "-c", "pass"], env, b""),
                ("sendmail, small send", [str(bin_dir / "sendmail"), "-C", str(conf),
                                          "someone@example.com"], env, MESSAGE),
                ("sendmail -V", [str(bin_dir / "sendmail"), "-V"], env, b""),
                ("sendmail -Z (usage)", [str(bin_dir / "sendmail"), "-Z"], env, b""),
                ("mailq, empty", [str(bin_dir / "mailq"), "-C", str(conf)], env, b""),
                ("mail -s subj alias", [str(bin_dir / "mail"), "-n", "-s", "subj", "user"],
                 mail_env, b"disk usage on /: 91%\n"),
            ]  # fmt: skip
            service = None
            if os.geteuid() == 0:
                sock = work / "submit.sock"
                service = subprocess.Popen(
                    [str(bin_dir / "mailx-relayd"), "-C", str(conf), "--socket", str(sock)],
                    env=dict(env, RELAY_OFFLINE=str(work / "offline")),
                    stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                for _ in range(200):
                    with socket.socket(socket.AF_UNIX) as probe:
                        try:
                            probe.connect(str(sock))
                            break
                        except OSError:
                            time.sleep(0.05)
                user_env = dict(env, RELAY_CONFIG=str(conf), RELAY_SOCKET=str(sock))
                paths.append(
                    ("hand-off to mailx-relayd (uid 65534)",
                     ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                      str(bin_dir / "sendmail"), "someone@example.com"], user_env, MESSAGE)
                )  # fmt: skip
            try:
                for name, argv, path_env, stdin in paths:
                    wall, rows, total = measure(argv, path_env, stdin)
                    key = f"{bin_dir}: {name}"
                    report[key] = {"wall_ms": wall, "import_ms": total,
                                   "modules": [r[0] for r in rows]}  # fmt: skip
                    print(f"== {key}: {wall:.1f} ms wall, {len(rows)} modules, "
                          f"imports {total:.1f} ms")  # fmt: skip
                    for mod, own, cumulative in sorted(rows, key=lambda r: -r[1])[:25]:
                        print(f"   {own / 1000:7.2f} {cumulative / 1000:7.2f}  {mod}")
            finally:
                if service is not None:
                    service.terminate()
                    service.wait(timeout=30)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)
        subprocess.run(["rm", "-rf", str(work)], check=False)
    if out_json:
        Path(out_json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
