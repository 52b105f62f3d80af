from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from crio_py import state
from crio_py.errors import AlreadyExists, InvalidArgument, NotFound
from crio_py.state import IdIndex, NameRegistry, RecordStore, new_id, write_atomic


def test_records_round_trip_and_delete(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.write("pods", "a" * 64, {"name": "web", "n": 1})
    store.write("pods", "a" * 64, {"name": "web", "n": 2})
    assert store.load_all("pods") == {"a" * 64: {"name": "web", "n": 2}}
    store.delete("pods", "a" * 64)
    store.delete("pods", "a" * 64)  # deleting twice is fine
    assert store.load_all("pods") == {}


def test_corrupt_record_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = RecordStore(tmp_path)
    store.write("pods", "good", {"ok": True})
    (tmp_path / "state" / "pods" / "bad.json").write_text('{"half": ')
    (tmp_path / "state" / "pods" / "list.json").write_text("[1, 2]")
    assert store.load_all("pods") == {"good": {"ok": True}}
    moved = sorted(p.name.split(".")[0] for p in (tmp_path / "state" / "pods" / "corrupt").iterdir())
    assert moved == ["bad", "list"]
    assert "corrupt state record moved aside" in caplog.text


def test_interrupted_temp_files_are_dropped(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.write("containers", "c1", {"v": 1})
    leftover = tmp_path / "state" / "containers" / ".c1.json.123.456.tmp"
    leftover.write_text('{"v": 2')
    assert store.load_all("containers") == {"c1": {"v": 1}}
    assert not leftover.exists()


def test_records_are_private(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.write("images", "x", {})
    assert (tmp_path / "state" / "images" / "x.json").stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "state" / "images" / "x.json").read_text()) == {}


def test_records_are_fsynced_and_run_root_files_are_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(state.os, "fsync", fsync)
    RecordStore(tmp_path).write("pods", "p1", {"id": "p1"})
    assert len(synced) == 2  # the temp file, then the directory holding the renamed record
    assert synced[1] == str(tmp_path / "state" / "pods")
    synced.clear()
    write_atomic(tmp_path / "hosts", b"127.0.0.1 localhost\n", durable=False)
    assert synced == []
    assert (tmp_path / "hosts").read_bytes() == b"127.0.0.1 localhost\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_ids_are_64_hex() -> None:
    ident = new_id()
    assert len(ident) == 64
    int(ident, 16)
    assert ident != new_id()


def test_id_prefixes_resolve_like_crictl() -> None:
    index = IdIndex("container")
    index.add("abc111" + "0" * 58)
    index.add("abc222" + "0" * 58)
    assert index.resolve("abc1") == "abc111" + "0" * 58
    with pytest.raises(InvalidArgument, match="ambiguous"):
        index.resolve("abc")
    with pytest.raises(NotFound, match="container 'fff' not found"):
        index.resolve("fff")
    with pytest.raises(InvalidArgument, match="must not be empty"):
        index.resolve("")
    assert index.find("fff") is None


def test_names_are_reserved_once() -> None:
    names = NameRegistry("pod")
    names.reserve("web_default_uid_0", "id1")
    names.reserve("web_default_uid_0", "id1")  # the holder may re-reserve
    with pytest.raises(AlreadyExists, match="reserved for id1"):
        names.reserve("web_default_uid_0", "id2")
    names.release("web_default_uid_0", "id2")  # not the holder: no effect
    with pytest.raises(AlreadyExists):
        names.reserve("web_default_uid_0", "id2")
    names.release("web_default_uid_0", "id1")
    names.reserve("web_default_uid_0", "id2")
