"""The README tells how to point the tests at other servers, with the variables and defaults
``tests/servers.py`` really uses."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_names_the_test_server_variables_and_defaults() -> None:
    readme = (ROOT / "README.md").read_text()
    servers = (ROOT / "tests" / "servers.py").read_text()
    read = dict(re.findall(r'os\.environ\.get\("(FOREBAY_TEST_\w+)", "([^"]+)"\)', servers))
    assert set(read) == {"FOREBAY_TEST_PG", "FOREBAY_TEST_REDIS"}
    for variable, default in read.items():
        assert f"`{variable}`" in readme, variable
        assert f"`{default}`" in readme, default
    assert "database `test`" in readme and "Redis database 0" in readme
