"""A kill -9 during a burst of state writes never leaves a corrupt or half-written record."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crio_py.state import RecordStore

pytestmark = pytest.mark.e2e

WRITER = """
import sys
from crio_py.state import RecordStore
store = RecordStore(__import__("pathlib").Path(sys.argv[1]))
payload = "x" * 20000
i = 0
print("ready", flush=True)
while True:
    i += 1
    store.write("pods", f"pod{i % 50}", {"seq": i, "payload": payload})
"""


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.5])
def test_kill_9_during_writes_keeps_every_record_whole(tmp_path: Path, delay: float) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    records = RecordStore(tmp_path).load_all("pods")
    assert records, "the writer wrote nothing"
    for record in records.values():
        assert len(record["payload"]) == 20000
    assert not (tmp_path / "state" / "pods" / "corrupt").exists()
    # Every file left is a whole JSON document (temp files of the killed write were removed).
    for path in (tmp_path / "state" / "pods").iterdir():
        json.loads(path.read_text())
