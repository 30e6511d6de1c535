"""Makes the server fixtures available to tests/servers even before the root
conftest registers them (`pytest_plugins = ["tests.servers.fixtures"]`);
never registers them twice."""

from __future__ import annotations

import pytest

PLUGIN = "tests.servers.fixtures"


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)
