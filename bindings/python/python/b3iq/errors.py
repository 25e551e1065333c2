"""The b3iq exception hierarchy.

Every error raised by b3iq is a :class:`B3iqError`. Each subclass also derives from the builtin a
caller would catch anyway, so ``except ValueError`` keeps working for bad input and
``except OSError`` for I/O. The Rust cause chain is kept in ``__cause__``.
"""


class B3iqError(Exception):
    """Base class of every exception raised by b3iq.

    ``code`` is the stable snake_case code of the failure: b3iq-core's, the host's or the
    runtime's (``"invalid_signature"``, ``"replayed"``, ``"weak_password"``,
    ``"context_length_exceeded"``, ...) or the binding's own (``"invalid_input"``, ``"io"``,
    ``"stopped"``); ``None`` for errors raised by the pure-Python layer. The class follows the
    error's category, with the same table in every binding (``docs/bindings.md``).
    """

    def __init__(self, message: str, code: "str | None" = None) -> None:
        super().__init__(message)
        self.code = code


class B3iqValueError(B3iqError, ValueError):
    """The input is malformed or out of range (bad hex, wrong length, bad encoding, bad key)."""


class B3iqAuthError(B3iqError):
    """A signature, key, password or audience check failed."""


class B3iqExpiredError(B3iqAuthError):
    """The object is expired or not yet valid (clock skew)."""


class B3iqReplayError(B3iqAuthError):
    """The job or token was already used."""


class B3iqPolicyError(B3iqError):
    """The request is refused by the node's policy for its current mode."""


class B3iqIOError(B3iqError, OSError):
    """A file or network operation failed."""


class B3iqRuntimeError(B3iqError, RuntimeError):
    """The model runtime failed (load, decode, generation)."""


class B3iqStateError(B3iqError, RuntimeError):
    """The host is in the wrong state for this call (not claimed, already claimed, stopped)."""


__all__ = [
    "B3iqError",
    "B3iqValueError",
    "B3iqAuthError",
    "B3iqExpiredError",
    "B3iqReplayError",
    "B3iqPolicyError",
    "B3iqIOError",
    "B3iqRuntimeError",
    "B3iqStateError",
]
