"""The public names are a promise: this pins them."""

import shoal


def test_public_names() -> None:
    assert sorted(shoal.__all__) == [
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
    for name in shoal.__all__:
        assert getattr(shoal, name) is not None


def test_every_error_has_one_root() -> None:
    for name in ["ConfigError", "ConflictError", "EncodeError", "LockLost", "LockTimeout",
                 "SessionStateError", "StoreUnavailable"]:
        assert issubclass(getattr(shoal, name), shoal.ShoalError)
    assert issubclass(shoal.EncodeError, TypeError)
    assert issubclass(shoal.ConfigError, ValueError)
