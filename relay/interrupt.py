"""Signals during a submission: stop the delivery, never lose the message.

systemd stopping a job (SIGTERM), an ssh session closing (SIGHUP) or a user's ^C
(SIGINT) used to kill `sendmail` or `mail` in the middle of the first delivery attempt,
with the message neither sent, queued nor kept. While `guard()` is active:

- the first of these signals raises `Stopped` where the program is (usually waiting for
  the server); the delivery turns it into a temporary failure, so that the queue takes
  the message (`Queue=fallback`), or dead.letter does (`Queue=no`);
- any later one is only noted: keeping the message (an fsync or two) must finish, and
  then the command ends at once. So is every signal once `settle()` has been called:
  after the server's reply to the message, before the queue commits it, before it is
  kept (a signal then would turn a delivery into a reported failure, or lose a message
  half-written to dead.letter).

Outside the main thread (the submission service's workers) signals cannot be caught and
`guard` does nothing: the service's own shutdown is what stops them.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from types import FrameType
else:
    # `_signal`, the C module that `signal` wraps: the same `signal()` and the same
    # numbers, as plain ints. `signal` itself converts every SIG* constant and handler
    # into an IntEnum at import (it imports `enum`): ~5 ms of every `sendmail`, which
    # installs its handlers on every delivery. `signal` is imported only for a name.
    import _signal

SIGNALS = (_signal.SIGTERM, _signal.SIGHUP, _signal.SIGINT)


class Stopped(BaseException):
    """A stop signal arrived during a delivery. A BaseException, as KeyboardInterrupt,
    so that no `except Exception` on the way swallows it."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number

    @property
    def name(self) -> str:
        import signal

        return signal.Signals(self.signal_number).name


class _Guard:
    def __init__(self) -> None:
        #: The signal that stopped the delivery; 0 once the message's fate is settled.
        self.fired: int | None = None
        #: A signal that came while settled: acted on by `wait_interruptibly`.
        self.noted: int | None = None
        self.previous: dict[int, object] = {}

    def handle(self, signal_number: int, _frame: FrameType | None) -> None:
        if self.fired is not None:
            self.noted = self.noted or signal_number
            return  # stopping, or settled: let the message be kept or committed first
        self.fired = signal_number
        raise Stopped(signal_number)


#: The guards in force (one per submission in progress in the main thread).
_ACTIVE: list[_Guard] = []


def settle() -> None:
    """From here on the message's fate is decided (the server took it, the queue is
    about to commit it, it is being kept): a stop signal must no longer raise, since
    that would report a delivered message as failed, or lose one half-kept. Later
    signals are only noted; the command ends moments later anyway."""
    for active in _ACTIVE:
        if active.fired is None:
            active.fired = 0


class wait_interruptibly:
    """`with wait_interruptibly():` around a wait that changes nothing of the message's
    fate (the reply to QUIT after a delivery): a stop signal, noted before or arriving
    during it, raises `Stopped` there, so that the command ends at once."""

    def __enter__(self) -> None:
        for active in _ACTIVE:
            if active.noted:
                raise Stopped(active.noted)
            if active.fired == 0:
                active.fired = None

    def __exit__(self, *_exc: object) -> None:
        settle()


def guard() -> _GuardContext:
    """`with guard():` around a submission (see the module doc)."""
    return _GuardContext()


class _GuardContext:
    def __enter__(self) -> _Guard:
        self.guard = _Guard()
        _ACTIVE.append(self.guard)
        try:
            for number in SIGNALS:
                self.guard.previous[number] = _signal.signal(number, self.guard.handle)
        except ValueError:  # not the main thread
            self._restore()
        return self.guard

    def __exit__(self, *_exc: object) -> None:
        self._restore()
        _ACTIVE.remove(self.guard)

    def _restore(self) -> None:
        for number, previous in self.guard.previous.items():
            _signal.signal(number, previous)  # type: ignore[arg-type]
        self.guard.previous.clear()
