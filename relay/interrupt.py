"""Signals during a submission: stop the delivery, never lose the message.

systemd stopping a job (SIGTERM), an ssh session closing (SIGHUP) or a user's ^C
(SIGINT) used to kill `sendmail` or `mail` in the middle of the first delivery attempt,
with the message neither sent, queued nor kept. While `guard()` is active:

- the first of these signals raises `Stopped` where the program is (usually waiting for
  the server); the delivery turns it into a temporary failure, so that the queue takes
  the message (`Queue=fallback`), or dead.letter does (`Queue=no`);
- any later one is only noted: keeping the message (an fsync or two) must finish, and
  then the command ends at once.

Outside the main thread (the submission service's workers) signals cannot be caught and
`guard` does nothing: the service's own shutdown is what stops them.
"""

from __future__ import annotations

import signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Stopped(BaseException):
    """A stop signal arrived during a delivery. A BaseException, as KeyboardInterrupt,
    so that no `except Exception` on the way swallows it."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number

    @property
    def name(self) -> str:
        return signal.Signals(self.signal_number).name


class _Guard:
    def __init__(self) -> None:
        self.fired: int | None = None
        self.previous: dict[int, object] = {}

    def handle(self, signal_number: int, _frame: FrameType | None) -> None:
        if self.fired is not None:
            return  # already stopping: let the message be kept first
        self.fired = signal_number
        raise Stopped(signal_number)


def guard() -> _GuardContext:
    """`with guard():` around a submission (see the module doc)."""
    return _GuardContext()


class _GuardContext:
    def __enter__(self) -> _Guard:
        self.guard = _Guard()
        try:
            for number in SIGNALS:
                self.guard.previous[number] = signal.signal(number, self.guard.handle)
        except ValueError:  # not the main thread
            self._restore()
        return self.guard

    def __exit__(self, *_exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        for number, previous in self.guard.previous.items():
            signal.signal(number, previous)  # type: ignore[arg-type]
        self.guard.previous.clear()
