from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from crio_py import config
from crio_py.cli import main


def test_defaults_load_and_document_every_key() -> None:
    cfg = config.load(None, None)
    assert cfg.root == "/var/lib/crio-py"
    assert cfg.listen == "/run/crio-py/crio-py.sock"
    assert cfg.runtime_handler("").path == "runc"
    assert cfg.metrics.port == 9537
    assert "NET_BIND_SERVICE" in cfg.default_capabilities
    # The default file documents every key the schema knows.
    documented = yaml.safe_load(config.default_text())
    assert set(documented) == set(cfg.to_dict())


def test_layers_apply_in_order(tmp_path: Path) -> None:
    main_file = tmp_path / "crio-py.yaml"
    main_file.write_text("log_level: debug\nregistries:\n  insecure: [a]\n")
    dropins = tmp_path / "d"
    dropins.mkdir()
    (dropins / "20-b.yaml").write_text("log_level: error\n")
    (dropins / "10-a.yaml").write_text("log_level: warning\nregistries:\n  auth_file: /x\n")
    (dropins / "ignored.txt").write_text("not: yaml: at all")
    cfg = config.load(main_file, dropins, {"metrics": {"port": 1234}})
    assert cfg.log_level == "error"
    assert cfg.registries.insecure == ["a"]  # maps merge key by key
    assert cfg.registries.auth_file == "/x"
    assert cfg.metrics.port == 1234
    assert cfg.metrics.address == "127.0.0.1"


def test_runtime_handlers_are_added(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("runtimes:\n  crun:\n    path: /usr/bin/crun\n    root: /run/crun\n    type: oci\n")
    cfg = config.load(f, None)
    assert sorted(cfg.runtimes) == ["crun", "runc"]
    assert cfg.runtime_handler("crun").path == "/usr/bin/crun"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bogus: 1\n", "c.yaml:bogus: unknown key"),
        ("cni:\n  conf_dirr: /x\n", "c.yaml:cni.conf_dirr: unknown key"),
        ("metrics:\n  port: high\n", "c.yaml:metrics.port: expected an integer"),
        ("log_level: loud\n", "c.yaml:log_level: must be one of"),
        ("default_runtime: kata\n", "c.yaml:default_runtime: 'kata' is not in runtimes"),
        ("root: relative/path\n", "c.yaml:root: must be an absolute path"),
        ("registries:\n  insecure: notalist\n", "c.yaml:registries.insecure: expected a list"),
        ("- a\n- b\n", "c.yaml:: expected a mapping"),
        ("cgroup_manager: both\n", "c.yaml:cgroup_manager: must be cgroupfs or systemd"),
        ("streaming:\n  token_ttl: 0\n", "c.yaml:streaming.token_ttl: must be positive"),
        ("streaming:\n  tls_cert: /c.pem\n", "c.yaml:streaming.tls_cert: tls_cert and tls_key go together"),
    ],
)
def test_mistakes_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load(f, None)
    assert any(expected in p and str(tmp_path) in p for p in err.value.problems), err.value.problems


def test_cli_refuses_invalid_config_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("log_level: loud\n")
    assert main(["--config", str(f), "--config-dir", str(tmp_path / "none"), "config"]) == 2
    err = capsys.readouterr().err
    assert f"{f}:log_level: must be one of" in err


def test_cli_config_prints_effective_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("log_level: debug\n")
    assert main(["--config", str(f), "--config-dir", str(tmp_path), "--root", "/srv/x", "config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["log_level"] == "debug"
    assert printed["root"] == "/srv/x"


def test_reload_changes_split_live_and_restart() -> None:
    old = config.load(None, None)
    new = config.load(None, None, {"log_level": "debug", "root": "/elsewhere", "default_sysctls": {"a": "1"}})
    live, restart = config.reload_changes(old, new)
    assert live == {"log_level": "debug", "default_sysctls": {"a": "1"}}
    assert restart == ["root"]


def test_named_config_file_that_is_missing_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nonexistent.yaml"
    assert main(["--config", str(missing), "--config-dir", str(tmp_path), "config"]) == 2
    assert f"{missing}: no such config file" in capsys.readouterr().err


def test_default_config_file_may_be_absent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", tmp_path / "absent.yaml")
    assert config.load(tmp_path / "absent.yaml", None).root == "/var/lib/crio-py"
