"""Writing relay configs that point at a test MailHub: shared by unit and e2e tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relay.config import Config
from relay.envelope import Identity
from relay.submission import Result, submit
from tests.mailhub import MailHub

PASSWORD = "s3cret #=pass word"
#: The invoking user of `send`.
ME = Identity("bob", 1000, "Bob Builder")
MESSAGE = b"To: Alice <alice@example.com>\nBcc: hidden@example.net\nSubject: hello\n\nbody\n"


def write_config(directory: Path, hub: MailHub | None = None, *lines: str, **keys: object) -> Path:
    """An ssmtp.conf (mode 0600) for `hub`; keys become `Key=value`, lines are added as is.

    Defaults fit a test: rewriteDomain=example.org, hostname=box.example.net,
    root=admin@example.com, Timeout=5, and a QueueDir inside `directory` (as root the
    default queue is the real /var/spool/mailx-relay, which no test may touch).
    """
    values: dict[str, object] = {
        "root": "admin@example.com",
        "rewriteDomain": "example.org",
        "hostname": "box.example.net",
        "Timeout": 5,
        "QueueDir": directory / "queue",
    }
    if hub is not None:
        values["mailhub"] = f"{hub.host}:{hub.port}"
        if hub.tls == "implicit":
            values["UseTLS"] = "yes"
        elif hub.tls == "starttls":
            values["UseSTARTTLS"] = "yes"
    values.update(keys)
    text = "".join(f"{key}={value}\n" for key, value in values.items() if value is not None)
    text += "".join(line + "\n" for line in lines)
    path = directory / "ssmtp.conf"
    path.write_text(text)
    path.chmod(0o600)
    return path


def send(
    tmp_path: Path,
    config: Config,
    *,
    message: bytes = MESSAGE,
    recipients: Sequence[str] = ("alice@example.com",),
    **options: Any,
) -> Result:
    """`relay.submit` as `sendmail` calls it for bob; dead.letter is in `tmp_path`.

    `options` are submit's (password, verbose, envelope_from, ...).
    """
    return submit(
        message,
        config=config,
        recipients=recipients,
        identity=ME,
        dead_letter=str(tmp_path / "dead.letter"),
        **options,
    )
