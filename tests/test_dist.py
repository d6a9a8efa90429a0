"""The wheels install with pip extras in a fresh virtual environment, and build without warnings.

This is the operator's install path (README, docs/operations.md), so it runs the recipe with
the real pip in a real new venv: ``pip download --dest wheelhouse dist/*.whl``, then ``pip
install --no-index --find-links wheelhouse``. The dependencies come from wherever pip is
configured to find them (PyPI or a local mirror); our own names never come from an index.
"""

import base64
import hashlib
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import hisparc_datastore

ROOT = Path(__file__).resolve().parents[1]
# every distribution under plugins/ (the Makefile and pyproject.toml name each; see
# tests/plugin/test_plugin_guide.py)
PLUGINS = tuple(sorted(path.name for path in (ROOT / "plugins").iterdir()
                       if (path / "pyproject.toml").is_file()))
OURS = ("hisparc-datastore", *(f"hisparc-datastore-{p}" for p in PLUGINS))
SQUATTED = "99.0"


def run(*command, timeout: float = 900) -> str:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def squatting_index(root: Path) -> str:
    """A package index (file://, PEP 503 layout) that offers each of our names at a higher
    version than ours: what anyone could publish on PyPI, where these names are not registered."""
    for name in OURS:
        module = name.replace("-", "_")
        info = f"{module}-{SQUATTED}.dist-info"
        files = {f"{module}_squatted.py": b"SQUATTED = True\n",
                 f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {SQUATTED}\n".encode(),
                 f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                  b"Tag: py3-none-any\n"}
        record = [f"{path},sha256={digest(data)},{len(data)}" for path, data in files.items()]
        files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
        project = root / "simple" / name
        project.mkdir(parents=True)
        wheel = f"{module}-{SQUATTED}-py3-none-any.whl"
        with zipfile.ZipFile(project / wheel, "w") as archive:
            for path, data in files.items():
                archive.writestr(path, data)
        (project / "index.html").write_text(f'<html><body><a href="{wheel}">{wheel}</a></body></html>\n')
    return (root / "simple").as_uri()


def test_make_dist_builds_the_core_and_every_plugin(wheels):
    names = sorted(path.name.split("-")[0] for path in wheels.glob("*.whl"))
    assert names == ["hisparc_datastore", *(f"hisparc_datastore_{p}" for p in sorted(PLUGINS))]


def test_the_recipe_installs_our_wheels_though_an_index_offers_higher_versions(wheels, tmp_path):
    index = squatting_index(tmp_path / "index")
    pip = [sys.executable, "-m", "pip"]
    # The squatting index is really asked: offered our name, pip takes the squatter from it,
    # which is what `pip install --find-links dist 'hisparc-datastore[all]'` did.
    run(*pip, "download", "--quiet", "--no-deps", "--dest", tmp_path / "asked", "--extra-index-url", index,
        "--find-links", wheels, "hisparc-datastore")
    squatter = f"hisparc_datastore-{SQUATTED}-py3-none-any.whl"
    assert [path.name for path in (tmp_path / "asked").iterdir()] == [squatter]

    # The recipe, with the squatting index offered at both steps.
    wheelhouse = tmp_path / "wheelhouse"
    run(*pip, "download", "--quiet", "--dest", wheelhouse, "--extra-index-url", index,
        *sorted(wheels.glob("*.whl")))
    ours = sorted(path.name for path in wheelhouse.glob("hisparc_datastore*"))
    assert ours == sorted(path.name for path in wheels.glob("*.whl"))
    assert {"attrs", "numpy", "pluggy", "tables", "waitress"} <= {
        path.name.split("-")[0].lower() for path in wheelhouse.glob("*.whl")}

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python, datastore = env_dir / "bin/python", env_dir / "bin/datastore"

    def install(spec: str) -> None:
        run(python, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", wheelhouse,
            "--extra-index-url", index, spec)

    def plugins() -> list[str]:
        return [line.split()[0] for line in run(datastore, "plugins", timeout=120).splitlines()
                if not line.startswith(" ")]

    install("hisparc-datastore[weather]")
    assert plugins() == ["hisparc-datastore-weather"]
    install("hisparc-datastore[all]")
    assert plugins() == [f"hisparc-datastore-{p}" for p in sorted(PLUGINS)]
    versions = run(python, "-c", "import importlib.metadata as m\n"
                   f"for name in {OURS!r}: print(name, m.version(name))", timeout=60)
    assert versions.split("\n")[:-1] == [f"{name} {hisparc_datastore.__version__}" for name in OURS]
    # the installed core is the wheel's copy, not this checkout
    where = run(python, "-c", "import hisparc_datastore; print(hisparc_datastore.__file__)", timeout=60)
    assert str(env_dir) in where
