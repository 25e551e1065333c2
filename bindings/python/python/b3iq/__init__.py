"""B3IQ for Python: embed a local inference host and verify its signed objects.

See the README for a quick start.
"""

from . import _b3iq
from ._b3iq import version
from .errors import (
    B3iqAuthError,
    B3iqError,
    B3iqExpiredError,
    B3iqIOError,
    B3iqPolicyError,
    B3iqReplayError,
    B3iqRuntimeError,
    B3iqStateError,
    B3iqValueError,
)

__version__ = version()

__all__ = [
    "version",
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
