"""shoal: web sessions shared by every process on every server.

See ``shoal.manager.SessionManager`` to start, ``shoal.wsgi`` for middleware.
"""

from .clock import ManualClock
from .cookies import CookieOptions
from .errors import (
    ConfigError,
    ConflictError,
    EncodeError,
    LockLost,
    LockTimeout,
    SessionStateError,
    ShoalError,
    StoreUnavailable,
)
from .manager import CommitOutcome, SessionManager
from .policies import Policy
from .session import Session

__all__ = [
    "CommitOutcome",
    "ConfigError",
    "ConflictError",
    "CookieOptions",
    "EncodeError",
    "LockLost",
    "LockTimeout",
    "ManualClock",
    "Policy",
    "Session",
    "SessionManager",
    "SessionStateError",
    "ShoalError",
    "StoreUnavailable",
]

__version__ = "0.1.0"
