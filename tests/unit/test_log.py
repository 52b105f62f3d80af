from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from crio_py import log as log_mod


@pytest.fixture
def restore_logging() -> object:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    root.handlers[:], level = saved
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_httpx_requests_are_logged_only_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    log_mod.setup("info", "logfmt")
    logging.getLogger("httpx").info("HTTP Request: GET http://127.0.0.1:5000/v2/")
    logging.getLogger("httpx").warning("something worth seeing")
    logging.getLogger("crio_py.x").info("ours")
    err = capsys.readouterr().err
    assert "HTTP Request" not in err
    assert "something worth seeing" in err and "ours" in err
    log_mod.setup("debug", "logfmt")
    logging.getLogger("httpx").info("HTTP Request: GET http://127.0.0.1:5000/v2/")
    err = capsys.readouterr().err
    assert "level=debug logger=httpx" in err
    assert len(logging.getLogger("httpx").filters) == 1  # set up twice, filtered once


def test_destination_names_the_log_file(tmp_path: Path) -> None:
    out = tmp_path / "daemon.log"
    with out.open("w") as f:
        code = "from crio_py import log; print(log.destination())"
        printed = subprocess.run([sys.executable, "-c", code], stderr=f, capture_output=False,
                                 stdout=subprocess.PIPE, text=True, check=True).stdout
    assert printed.strip() == str(out)
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert piped.strip() == "stderr, a pipe read by whatever started the daemon"
