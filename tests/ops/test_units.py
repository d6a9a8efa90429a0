"""The systemd units in deploy/systemd: checked by systemd itself where it is installed, and
read for the options production needs (docs/operations.md, "Start")."""

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
SERVICES = sorted(UNITS.glob("*.service"))
DAEMONS = [path for path in SERVICES if "status" not in path.name]
DATASTORE = Path(sys.executable).with_name("datastore")


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def test_there_are_three_daemons_and_a_status_check():
    assert [path.name for path in DAEMONS] == [
        "datastore-config-server.service", "datastore-serve.service", "datastore-writer.service"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (apt-get install systemd)")
def test_systemd_analyze_verify_accepts_every_unit_without_a_warning(tmp_path):
    # The venv path of the units does not exist here: point them at this venv's datastore.
    for path in [*SERVICES, *UNITS.glob("*.timer")]:
        text = path.read_text().replace("/srv/datastore/venv/bin/datastore", str(DATASTORE))
        (tmp_path / path.name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # an unknown or misspelt option is only a warning to systemd: refuse it here
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize("path", DAEMONS, ids=lambda p: p.name)
def test_each_daemon_is_hardened_and_stops_restarting_on_a_configuration_error(path):
    service = read_unit(path)["Service"]
    assert service["RestartPreventExitStatus"] == "2"  # the CLI's exit status for a bad config
    assert service["Restart"] == "on-failure"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"].split()
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices"):
        assert service[key] == "yes", key
    # one log destination: the file in [General] log, not a second copy in journald
    assert service["ExecStart"].split()[-1] == "--quiet"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"


@pytest.mark.parametrize("path", [p for p in DAEMONS if "config-server" not in p.name],
                         ids=lambda p: p.name)
def test_receiver_and_writer_need_the_data_dir_mounted_and_may_write_only_it_and_the_log(path):
    unit = read_unit(path)
    assert unit["Unit"]["RequiresMountsFor"] == "/srv/datastore/data"
    assert unit["Service"]["ReadWritePaths"].split() == ["/srv/datastore/data", "/var/log/hisparc"]
    # group-writable queue folders (the comment says why), nothing wider
    assert unit["Service"]["UMask"] == "0002"
    assert "Group-writable" in path.read_text() or "group-writable" in path.read_text()


def test_the_config_server_listens_on_loopback_and_keeps_the_station_list_from_others():
    service = read_unit(UNITS / "datastore-config-server.service")["Service"]
    assert "--bind" not in service["ExecStart"]  # the address is config.ini's, where status looks
    deployed = configparser.ConfigParser(interpolation=None)
    deployed.read(ROOT / "deploy" / "config.ini")
    # nginx listens on 8002 for publicdb and passes /RPC2 here
    assert deployed["ConfigServer"]["config_server_bind"] == "127.0.0.1:8012"
    assert service["UMask"] == "0027"


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_documentation_names_a_file_the_install_puts_there(path):
    """Documentation=file:///srv/datastore/docs/X.md: X.md exists in docs/ and the install
    walkthrough copies docs/ to /srv/datastore/docs."""
    url = read_unit(path)["Unit"]["Documentation"]
    assert url.startswith("file:///srv/datastore/docs/")
    assert (ROOT / "docs" / url.rsplit("/", 1)[1]).is_file()
    assert "cp docs/*.md /srv/datastore/docs/" in (ROOT / "docs" / "operations.md").read_text()
