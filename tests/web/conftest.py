"""The web tests run on asyncio only: uvicorn serves on asyncio."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say where the browser tests left their screenshots."""
    from _web_kit import ROOT

    folder = ROOT / "test-artifacts" / "browser"
    if folder.is_dir() and any(folder.iterdir()):
        terminalreporter.write_line(f"browser test screenshots: {folder}")
