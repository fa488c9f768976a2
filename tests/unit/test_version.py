"""`backup-monitor --version` says the installed package's version."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from service.cli.main import main


def test_version_is_the_package_metadatas(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"backup-monitor {version('backup-monitor')}\n"
    assert version("backup-monitor")[0].isdigit()
