"""deploy/ holds a config.ini that matches the units, and the docs and the units agree on
every path, the user and the addresses (issue 25, point 8); the user and the folders are
made by the documented steps, and ``init`` makes the log's folder."""

import configparser
import re
from pathlib import Path

import pytest

from hisparc_datastore.cli import main
from hisparc_datastore.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONFIG_PATH = "/srv/datastore/config.ini"
DAEMONS = {"serve": "datastore-serve", "writer": "datastore-writer",
           "config-server": "datastore-config-server"}


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str
    parser.read_string((DEPLOY / "systemd" / f"{name}.service").read_text())
    return parser


@pytest.fixture(scope="module")
def settings():
    return load_settings(DEPLOY / "config.ini")  # every key known and within its bounds


def install_steps() -> str:
    text = (ROOT / "docs/operations.md").read_text()
    return text[text.index("## Install"):text.index("## Configure")]


def test_every_unit_runs_the_deployed_config_as_the_documented_user(settings):
    docs = install_steps()
    [user] = re.findall(r"useradd --system .* (\w+)$", docs, re.M)
    for command, name in DAEMONS.items():
        service = unit(name)["Service"]
        words = service["ExecStart"].split()
        assert words[1:3] == [command, CONFIG_PATH] and "--bind" not in words
        assert service["User"] == service["Group"] == user
    supervisord = (DEPLOY / "supervisord/datastore.conf").read_text()
    assert re.findall(r"^user=(\w+)$", supervisord, re.M) == [user] * 3
    assert re.findall(r"datastore \S+ (\S+)", supervisord) == [CONFIG_PATH] * 3
    assert f"install -o root -g {user} -m 0640 deploy/config.ini {CONFIG_PATH}" in docs


def test_the_units_may_write_exactly_the_deployed_configs_folders(settings):
    data_dir, log_dir = str(settings.data_dir), str(settings.log.parent)
    for name in ("datastore-serve", "datastore-writer"):
        parsed = unit(name)
        assert parsed["Unit"]["RequiresMountsFor"] == data_dir
        assert parsed["Service"]["ReadWritePaths"].split() == [data_dir, log_dir]
    rpc = unit("datastore-config-server")["Service"]
    assert rpc["ReadWritePaths"].split() == [str(settings.station_list.parent), log_dir]
    logrotate = (DEPLOY / "logrotate/hisparc-datastore").read_text()
    assert logrotate.startswith(f"{settings.log} {{") or f"\n{settings.log} {{" in logrotate


def test_the_documented_steps_make_every_folder_the_units_need(settings):
    docs = install_steps()
    made = {line.split()[-1] if "#" not in line else line.split("#")[0].split()[-1]
            for line in docs.splitlines() if line.startswith("$ install -d -o hisparc")}
    assert {str(settings.data_dir), str(settings.station_list.parent), str(settings.log.parent)} <= made
    # the station list is made 0640 before the first fetch, which keeps its mode
    assert f"-m 0640 /dev/null {settings.station_list}" in docs
    for text in (ROOT / "docs/operations.md").read_text(), (ROOT / "README.md").read_text():
        assert "/etc/datastore" not in text


def test_the_proxy_and_the_services_agree_on_the_addresses(settings):
    nginx = (DEPLOY / "proxy/nginx.conf").read_text()
    assert re.search(r"upstream hisparc_datastore \{\s*server (\S+);", nginx)[1] == settings.receiver_bind
    assert f"proxy_pass http://{settings.config_server_bind};" in nginx


def test_init_makes_the_logs_folder(tmp_path, capsys):
    (tmp_path / "stations.csv").write_text("501,amsterdam,pw\n")
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nlog={tmp_path}/var/log/hisparc/datastore.log\n"
                      f"station_list={tmp_path}/stations.csv\ndata_dir={tmp_path}/data\n")
    assert main(["init", str(config)]) == 0
    assert (tmp_path / "var/log/hisparc").is_dir()
    assert f"created {tmp_path / 'var/log/hisparc'}" in capsys.readouterr().out
