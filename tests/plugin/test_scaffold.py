"""`datastore new-plugin`: its names and defaults, what it refuses, and that what it writes is
a plugin the datastore loads and stores (the full author's path, in a fresh venv, is
tests/plugin/test_new_plugin.py)."""

import datetime
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from hisparc_datastore.cli import main
from hisparc_datastore.plugin.scaffold import ScaffoldError, plugin_names, render, write_plugin
from hisparc_datastore.testing import event


def test_the_defaults_follow_from_the_name():
    names = plugin_names("cosmic_ray")
    assert (names.code, names.distribution, names.package, names.title) == (
        "COS", "hisparc-datastore-cosmic-ray", "datastore_cosmic_ray", "Cosmic ray detector events")


@pytest.mark.parametrize("name, code, problem", [
    ("Muon", None, "plugin name 'Muon': use lower-case letters"),
    ("2muon", None, "plugin name '2muon'"),
    ("mu", None, "no upload code follows from 'mu': give one with --code"),
    ("muon", "MU", "upload code 'MU' is not three upper-case characters"),
    ("muon", "1MU", "upload code '1MU'"),
])
def test_names_a_plugin_cannot_have_are_refused(name, code, problem):
    with pytest.raises(ScaffoldError, match=problem):
        plugin_names(name, code)


def test_the_options_reach_every_file(tmp_path):
    names = plugin_names("radon", code="RN1", distribution="school-radon", title="Radon in schools")
    files = {str(path): text for path, text in render(names).items()}
    assert sorted(files) == ["README.md", "conftest.py", "datastore_radon/__init__.py", "pyproject.toml",
                             "tests/test_plugin.py"]
    assert 'name = "school-radon"' in files["pyproject.toml"]
    assert '[project.entry-points.hisparc_datastore]\nradon = "datastore_radon"' in files["pyproject.toml"]
    assert 'upload_code="RN1"' in files["datastore_radon/__init__.py"]
    assert 'table_title="Radon in schools"' in files["datastore_radon/__init__.py"]
    assert "${" not in "".join(files.values()) and "$" not in files["datastore_radon/__init__.py"]
    assert files["conftest.py"].strip().endswith('pytest_plugins = ["hisparc_datastore.testing"]')


def test_the_written_module_is_a_plugin_the_writer_stores(tmp_path, datastore, monkeypatch):
    write_plugin(tmp_path / "muon", plugin_names("muon"))
    path = tmp_path / "muon/datastore_muon/__init__.py"
    spec = importlib.util.spec_from_file_location("datastore_muon", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "datastore_muon", module)
    spec.loader.exec_module(module)
    datastore.register(module)
    assert datastore.event_type("MUO").table_name == "muon"
    moment = datetime.datetime(2026, 3, 1, 12)
    sent = [event("MUO", moment, {"MUO_COUNT": 3, "MUO_TEMPERATURE1": 20.5, "MUO_MESSAGE": "ok"}),
            *datastore.simulated_events(501, moment, seconds=600)]
    sent = [e for e in sent if e["header"]["eventtype_uploadcode"] == "MUO"]
    assert len(sent) == 11
    datastore.store(sent)
    datastore.assert_stored(sent)
    assert datastore.quarantined() == []


def test_an_existing_folder_or_a_claimed_code_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "muon").mkdir()
    assert main(["new-plugin", "muon"]) == 2
    assert "muon exists already" in capsys.readouterr().err
    assert main(["new-plugin", "weathervane", "--code", "WTR"]) == 2
    assert "upload code WTR is declared by hisparc-datastore-weather" in capsys.readouterr().err
    assert main(["new-plugin", "events", "--code", "EVX"]) == 2
    assert "table 'events' is declared by hisparc-datastore-hisparc" in capsys.readouterr().err
    assert main(["new-plugin", "muon", "--directory", "elsewhere"]) == 0
    assert (tmp_path / "elsewhere/datastore_muon/__init__.py").is_file()
    assert "wrote hisparc-datastore-muon into elsewhere/" in capsys.readouterr().out


ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs/plugin-guide.md"


def test_the_guides_edit_adds_a_column_the_writer_fills(tmp_path, datastore, monkeypatch):
    guide = " ".join(GUIDE.read_text(encoding="utf-8").split())
    column_line, code_entry = "pressure = tables.Float32Col(dflt=-1, pos=8)", '"MUO_PRESSURE": "pressure"'
    assert f"(`{column_line}`)" in guide and f"(`{code_entry}`)" in guide
    write_plugin(tmp_path / "muon", plugin_names("muon"))
    path = tmp_path / "muon/datastore_muon/__init__.py"
    source = path.read_text()
    source = source.replace("    message = tables.Int32Col(dflt=-1, pos=7)\n",
                            f"    message = tables.Int32Col(dflt=-1, pos=7)\n    {column_line}\n", 1)
    source = source.replace('        "MUO_MESSAGE": "message",\n',
                            f'        "MUO_MESSAGE": "message",\n        {code_entry},\n', 1)
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("datastore_muon", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "datastore_muon", module)
    spec.loader.exec_module(module)
    datastore.register(module)
    sent = [event("MUO", datetime.datetime(2026, 3, 1, 12), {"MUO_PRESSURE": 1013.25, "MUO_COUNT": 4})]
    datastore.store(sent)
    datastore.assert_stored(sent)
    assert datastore.read("muon", 501)["pressure"].tolist() == [1013.25]


def test_the_printed_next_steps_install_pytest_and_work_with_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["new-plugin", "muon"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "next: pip install -e './muon[test]' && pytest ./muon"
    absolute = tmp_path / "deep" / "my plugins" / "radon"
    absolute.parent.mkdir(parents=True)
    assert main(["new-plugin", "radon", "--directory", str(absolute)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"next: pip install -e '{absolute}[test]' && pytest '{absolute}'")
    # the test extra the hint names is the one that brings pytest
    assert 'test = ["pytest' in (absolute / "pyproject.toml").read_text()


def test_a_plugin_may_not_be_named_as_a_node_of_the_core(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["new-plugin", "blobs", "--code", "BLB"]) == 2
    assert capsys.readouterr().err == ("datastore new-plugin: table 'blobs' is a node the core keeps in "
                                       "every station group: choose another name\n")
    assert not (tmp_path / "blobs").exists()
    assert main(["new-plugin", "blobs_meter", "--code", "BLB"]) == 0


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("ruff")), "check", "--no-cache",
                           "--config", str(ROOT / "pyproject.toml"), *args],
                          capture_output=True, text=True, timeout=300)


def test_a_plugin_written_into_plugins_passes_the_repositorys_lint(tmp_path):
    # as `make lint` sees plugins/NAME: with the repository's ruff settings
    write_plugin(tmp_path / "plugins" / "muon", plugin_names("muon"))
    done = ruff(str(tmp_path / "plugins" / "muon"))
    assert done.returncode == 0, done.stdout + done.stderr
    # and the check can fail: the imports in the order the templates had before
    test = tmp_path / "plugins/muon/tests/test_plugin.py"
    test.write_text(test.read_text().replace("import pytest\n\nimport datastore_muon as plugin\n",
                                             "import datastore_muon as plugin\nimport pytest\n"))
    assert "I001" in ruff(str(test)).stdout


def refused(capsys, *argv: str) -> str:
    """The one line ``datastore new-plugin`` prints refusing ``argv`` (exit 2, no traceback)."""
    assert main(["new-plugin", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("datastore new-plugin: "), err
    return err


@pytest.mark.parametrize("argv, problem", [
    (["hisparc"], "distribution 'hisparc-datastore-hisparc' is installed already (hisparc-datastore-hisparc"),
    (["weather", "--code", "WXX"], "distribution 'hisparc-datastore-weather' is installed already"),
    (["lightning", "--code", "LXX"], "distribution 'hisparc-datastore-lightning' is installed already"),
    (["muon", "--distribution", "hisparc-datastore"], "is the datastore's own: installing the plugin would "
                                                      "replace the core"),
    (["muon", "--distribution", "Hisparc_Datastore"], "is the datastore's own"),
    (["muon", "--distribution", "pluggy"], "distribution 'pluggy' is installed already"),
    (["weather", "--code", "WXX", "--distribution", "school-weather"],
     "plugin name 'weather' is taken by the installed hisparc-datastore-weather"),
])
def test_a_plugin_that_would_replace_an_installed_one_or_the_core_is_refused(tmp_path, monkeypatch, capsys,
                                                                             argv, problem):
    monkeypatch.chdir(tmp_path)
    assert problem in refused(capsys, *argv)
    assert list(tmp_path.iterdir()) == []


def test_a_module_of_the_plugins_name_importable_already_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "datastore_radon.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    monkeypatch.chdir(tmp_path)
    assert f"module datastore_radon exists already ({tmp_path / 'lib' / 'datastore_radon.py'})" in refused(
        capsys, "radon")
    assert main(["new-plugin", "radium"]) == 0


@pytest.mark.parametrize("argv, problem", [
    (["muon\n"], "plugin name 'muon\\n'"),
    (["mu\x00on"], "plugin name 'mu\\x00on'"),
    (["muon", "--code", "MUO\n"], "upload code 'MUO\\n'"),
    (["muon", "--distribution", "muon-plugin\n"], "distribution name 'muon-plugin\\n'"),
    (["muon", "--title", "Muons\nimport os"], "title 'Muons\\nimport os': give one line of printable text"),
    (["muon", "--title", "bell\x07"], "title 'bell\\x07'"),
    (["muon", "--title", "  "], "title '  '"),
    (["m" * 300], f"plugin name {'m' * 20!r}... is 300 characters long: at most 64"),
    (["muon", "--distribution", "d" * 300], "at most 100"),
    (["muon", "--title", "t" * 300], "at most 200 characters"),
])
def test_names_codes_and_titles_that_would_make_broken_source_are_one_line(tmp_path, monkeypatch, capsys,
                                                                           argv, problem):
    monkeypatch.chdir(tmp_path)
    assert problem in refused(capsys, *argv)
    assert list(tmp_path.iterdir()) == []


def test_the_longest_name_is_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = "m" * 64
    assert main(["new-plugin", name, "--code", "MMM"]) == 0
    assert (tmp_path / name / f"datastore_{name}" / "__init__.py").is_file()


@pytest.mark.parametrize("title", ['He said "hi"', 'ends in a quote"', "a \\ backslash\\", '"""triple"""',
                                   "Myonen über Zürich ★", "${code} $$ {braces}"])
def test_any_printable_title_reaches_python_and_toml_as_written(tmp_path, title):
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    import ast

    write_plugin(tmp_path / "muon", plugin_names("muon", title=title))
    module = ast.parse((tmp_path / "muon/datastore_muon/__init__.py").read_text(encoding="utf-8"))
    assert ast.get_docstring(module).splitlines()[0] == f"hisparc-datastore plugin: {title}."
    [declared] = [node for node in ast.walk(module)
                  if isinstance(node, ast.keyword) and node.arg == "table_title"]
    assert ast.literal_eval(declared.value) == title
    tests = ast.parse((tmp_path / "muon/tests/test_plugin.py").read_text(encoding="utf-8"))
    assert ast.get_docstring(tests).startswith(f"{title}: declared")
    project = tomllib.loads((tmp_path / "muon/pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["description"] == f"hisparc-datastore plugin: {title}"


def test_a_dangling_or_unwritable_directory_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    assert "link is a symbolic link: new-plugin writes into a new folder only" in refused(
        capsys, "muon", "--directory", str(tmp_path / "link"))
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "file").write_text("")
    assert f"cannot write {tmp_path / 'file' / 'muon'}: not a directory" in refused(
        capsys, "muon", "--directory", str(tmp_path / "file" / "muon"))
    # a folder whose parents do not exist yet is made
    assert main(["new-plugin", "muon", "--directory", str(tmp_path / "a" / "b" / "muon")]) == 0
    assert (tmp_path / "a/b/muon/datastore_muon/__init__.py").is_file()
