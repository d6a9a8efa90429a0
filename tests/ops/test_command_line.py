"""The command's manners: ``python -m hisparc_datastore``, help for every command and argument,
``--version`` with the plugins, a reader that goes away (``| head``), a port out of range."""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from hisparc_datastore.cli import build_parser, main
from hisparc_datastore.config import split_host_port

PYTHON = sys.executable


def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "hisparc_datastore", *argv], capture_output=True, text=True,
                          timeout=120, **kwargs)


def test_python_dash_m_is_the_datastore_command():
    done = run("plugins")
    assert done.returncode == 0, done.stderr
    via_script = subprocess.run([str(Path(sys.executable).with_name("datastore")), "plugins"],
                                capture_output=True, text=True, timeout=120)
    assert done.stdout == via_script.stdout and "  CIC  events" in done.stdout
    assert run("--help").stdout.startswith("usage: datastore ")


def test_version_lists_the_core_and_every_plugin_with_its_version():
    done = run("--version")
    assert done.returncode == 0, done.stderr
    expected = [f"datastore {importlib.metadata.version('hisparc-datastore')}"] + sorted(
        f"  {name} {importlib.metadata.version(name)}"
        for name in ("hisparc-datastore-hisparc", "hisparc-datastore-lightning", "hisparc-datastore-weather"))
    assert done.stdout.splitlines() == expected


def test_the_top_level_help_says_what_the_datastore_is():
    parser = build_parser()
    assert parser.description.startswith("Receive HiSPARC station uploads over HTTP")
    assert parser.description.endswith(".") and "``" not in parser.format_help()


def commands():
    [sub] = [a for a in build_parser()._actions if a.dest == "command"]
    return sub.choices


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_command_and_argument_has_help(name):
    [listed] = [a for a in build_parser()._actions if a.dest == "command"]
    assert any(choice.dest == name and choice.help for choice in listed._choices_actions), name
    command = commands()[name]
    assert command.description and command.description.endswith("."), name
    for action in command._actions:
        if action.dest != "help":
            what = "/".join(action.option_strings) or action.dest
            assert action.help, f"datastore {name}: {what} has no help"


def reader_gone(*argv: str) -> subprocess.CompletedProcess:
    """Run the command with its output read by no one: the pipe is closed before it writes,
    as `| head -1` closes it after one line."""
    process = subprocess.Popen([PYTHON, "-m", "hisparc_datastore", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    err = process.stderr.read()
    return subprocess.CompletedProcess(process.args, process.wait(timeout=120), "", err)


def status_config(tmp_path):
    (tmp_path / "stations.csv").write_text("501,amsterdam,pw\n")
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nstation_list={tmp_path}/stations.csv\ndata_dir={tmp_path}/data\n")
    assert main(["init", str(config)]) == 0
    return config


@pytest.mark.parametrize("argv", [["plugins"], ["status", "CONFIG"], ["--version"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path, capsys, argv):
    argv = [str(status_config(tmp_path)) if a == "CONFIG" else a for a in argv]
    capsys.readouterr()
    done = reader_gone(*argv)
    assert done.stderr == "" and done.returncode == 141, done.stderr
    # and with a reader, all of it, as before
    whole = run(*argv)
    assert whole.stderr == "" and whole.stdout.count("\n") >= 2


@pytest.mark.parametrize("command", ["serve", "config-server"])
def test_a_port_out_of_range_is_named_as_such(tmp_path, capsys, command):
    config = status_config(tmp_path)
    capsys.readouterr()
    assert main([command, str(config), "--bind", "127.0.0.1:80800"]) == 2
    assert capsys.readouterr().err == (f"datastore {command}: --bind '127.0.0.1:80800': port 80800 is out of "
                                       "range: at most 65535 (0: any free port)\n")
    assert main([command, str(config), "--bind", "localhost"]) == 2
    assert "expected HOST:PORT, e.g. 127.0.0.1:8080" in capsys.readouterr().err


def test_every_port_in_range_is_accepted():
    assert split_host_port("127.0.0.1:0") == ("127.0.0.1", 0)
    assert split_host_port("[::1]:65535") == ("::1", 65535)
    with pytest.raises(ValueError, match="port 65536 is out of range"):
        split_host_port("127.0.0.1:65536")
