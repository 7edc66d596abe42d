"""`make demo`: one message for `archuser`, from `mail` to a throw-away mailhub and back.

Starts an aiosmtpd server on a free 127.0.0.1 port as the mailhub, writes a demo
ssmtp.conf and mail.rc (with the ArchWiki alias `archuser 'My Name'<someone@example.com>`)
into a temporary folder, runs `echo body | mail -s subj archuser` against them, prints
the message exactly as the server received it with its envelope, and stops the server.
Nothing leaves the loopback interface.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

BIN = Path(sys.executable).parent


class Recorder:
    """aiosmtpd handler keeping each envelope and the exact bytes received."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), bytes(data)))
        self.arrived.set()
        return "250 2.0.0 accepted by the demo mailhub"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    recorder = Recorder()
    port = free_port()
    # A fixed server_hostname: aiosmtpd would otherwise ask DNS for this host's FQDN.
    hub = Controller(recorder, hostname="127.0.0.1", port=port, server_hostname="mailhub.demo")
    hub.start()
    try:
        with tempfile.TemporaryDirectory(prefix="mailx-demo-") as folder:
            home = Path(folder)
            conf = home / "ssmtp.conf"
            conf.write_text(
                f"mailhub=127.0.0.1:{port}\nrewriteDomain=example.org\n"
                "hostname=demo.example.org\nQueue=no\n"
            )
            conf.chmod(0o600)
            mailrc = home / ".mailrc"
            mailrc.write_text("alias archuser 'My Name'<someone@example.com>\n")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(home),
                "LANG": "C.UTF-8",
                "RELAY_CONFIG": str(conf),
                "MAILRC": str(mailrc),
                "MAILX_NO_SYSTEM_RC": "1",
            }
            # The relay's configuration first: it explains the From line the server gets
            # (root's login at rewriteDomain) and where the message goes.
            print(f"$ cat {conf}\n{conf.read_text()}")
            print(f"$ cat {mailrc}\n{mailrc.read_text()}")
            print("$ echo body | mail -s subj archuser")
            done = subprocess.run(
                [str(BIN / "mail"), "-s", "subj", "archuser"],
                input=b"body\n",
                env=env,
                capture_output=True,
                check=False,
                timeout=60,
            )
            sys.stdout.write(done.stderr.decode(errors="replace"))
            print(f"(exit status {done.returncode})\n")
            if done.returncode != 0 or not recorder.arrived.wait(10):
                print("demo: the message did not arrive", file=sys.stderr)
                return 1
        sender, recipients, data = recorder.received[0]
        print(f"== received by the mailhub on 127.0.0.1:{port}")
        print(f"MAIL FROM:<{sender}>")
        for rcpt in recipients:
            print(f"RCPT TO:<{rcpt}>")
        print("DATA")
        sys.stdout.write(data.decode("utf-8", errors="replace").replace("\r\n", "\n"))
        print(".")
    finally:
        hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
