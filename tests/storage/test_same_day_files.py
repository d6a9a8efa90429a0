"""Tables made and appended below PyTables (storage/hdf5calls.py) give the day files that
PyTables' create_table and Table.append gave: the same nodes, attributes (names in order,
values, types), dtypes, chunk shapes, filters, rows and blobs.

The reference is the writer's code path before (``layout.BELOW_PYTABLES = False``: every
table through PyTables, ``File.flush``), run by the real writer over the same queue.
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import numpy as np
import pytest
import tables

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.sim import simulate
from hisparc_datastore.storage import layout
from hisparc_datastore.testing.helpers import settings_for
from hisparc_datastore.testing.kit import upload_events
from hisparc_datastore.writer.service import Writer


def _value(value) -> tuple:
    """An attribute value with its type: a numpy scalar or array by dtype and bytes."""
    if isinstance(value, (np.ndarray, np.generic)):
        return (type(value).__name__, value.dtype.str, np.asarray(value).shape, np.asarray(value).tobytes())
    return (type(value).__name__, repr(value))


def describe(path: Path) -> dict:
    """Everything a reader of the day file can see, node by node."""
    nodes = {}
    with tables.open_file(str(path)) as h5:
        for node in h5.walk_nodes("/"):
            attrs = node._v_attrs
            entry = {"class": type(node).__name__,
                     "attrs": [(name, _value(attrs[name])) for name in attrs._v_attrnames]}
            if isinstance(node, tables.Leaf):
                entry.update(chunkshape=node.chunkshape, filters=repr(node.filters),
                             nrows=int(node.nrows))
                if isinstance(node, tables.Table):
                    entry["dtype"] = node.dtype.descr
                    entry["rows"] = node.read().tobytes()
                    entry["colinfo"] = [(name, repr(node.coldescrs[name]))
                                        for name in node.colnames]
                else:
                    entry["rows"] = [bytes(row) for row in node.read()]
                    entry["atom"] = repr(node.atom)
            nodes[node._v_pathname] = entry
    return nodes


def _queue(source: Path, testdata: Path) -> None:
    """Simulated stations of every event type across a UTC midnight, and real uploads."""
    data_dir, stations = simulate.prepare(source, 7, seed=3, minimum_year=2016)
    uploads = simulate.simulated_uploads(stations, datetime.datetime(2026, 11, 23, 23, 58), 240, seed=3)
    for name in ("py2_s510_100events", "py2event", "py3event", "py2_pysparc_config"):
        uploads.append(Upload(510, "Amsterdam", upload_events(testdata / "uploads" / name)))
    simulate.write_queue(data_dir, uploads)


def _store_in_two_runs(data_dir: Path) -> None:
    """Half the queue, then the rest, in small batches: tables are made, appended to again in
    later batches, and reopened from disk by a second writer."""
    incoming = sorted((data_dir / "incoming").iterdir())
    later = data_dir / "later"
    later.mkdir()
    for path in incoming[len(incoming) // 2:]:
        path.rename(later / path.name)
    settings = settings_for(data_dir, minimum_year=2016, batch_uploads=5, prepare_process=False)
    Writer(settings, load_registry()).run(once=True)
    for path in sorted(later.iterdir()):
        path.rename(data_dir / "incoming" / path.name)
    Writer(settings, load_registry()).run(once=True)


@pytest.fixture(scope="module")
def both(tmp_path_factory, shared) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("same")
    _queue(root / "source", shared / "testdata")
    runs = {}
    for name, below in (("pytables", False), ("below", True)):
        data_dir = root / name
        shutil.copytree(root / "source", data_dir)
        original = layout.BELOW_PYTABLES
        layout.BELOW_PYTABLES = below
        try:
            _store_in_two_runs(data_dir)
        finally:
            layout.BELOW_PYTABLES = original
        runs[name] = data_dir
    return runs["pytables"], runs["below"]


def _day_files(data_dir: Path) -> list[Path]:
    return sorted(path.relative_to(data_dir) for path in data_dir.rglob("*.h5"))


def test_day_files_made_below_pytables_are_those_pytables_made(both):
    reference, below = both
    names = _day_files(reference)
    # 2017-02-22, 2017-02-26 (the real uploads), both sides of 2026-11-24's midnight
    assert [name.name for name in names] == ["2017_2_22.h5", "2017_2_26.h5", "2026_11_23.h5",
                                             "2026_11_24.h5"]
    assert _day_files(below) == names
    for name in names:
        want, have = describe(reference / name), describe(below / name)
        assert list(have) == list(want), name
        for node in want:
            assert have[node] == want[node], f"{name}{node}"


def test_the_comparison_sees_every_table_kind_with_rows_and_blobs(both):
    """The files compared hold what a network day holds: each table kind, rows, blobs."""
    _, below = both
    described = describe(below / "2026" / "11" / "2026_11_24.h5")
    kinds = {path.rsplit("/", 1)[1] for path, entry in described.items() if entry["class"] == "Table"}
    assert {"events", "singles", "weather", "config", "comparator"} <= kinds
    tables_ = [entry for entry in described.values() if entry["class"] == "Table"]
    assert all(entry["nrows"] > 0 for entry in tables_)
    assert all(("NROWS", ("int64", "<i8", (), np.int64(entry["nrows"]).tobytes())) in entry["attrs"]
               for entry in tables_)
    blobs = [entry for entry in described.values() if entry["class"] == "VLArray"]
    assert blobs and all(entry["rows"] for entry in blobs)
    real = describe(below / "2017" / "2" / "2017_2_26.h5")
    events = real["/hisparc/cluster_amsterdam/station_510/events"]
    assert events["nrows"] == 36


def test_the_comparison_refuses_a_file_that_differs_in_one_attribute(both, tmp_path):
    """describe() is what the identity rests on: it must see a changed attribute type."""
    reference, _ = both
    name = Path("2026", "11", "2026_11_24.h5")
    changed = tmp_path / "changed.h5"
    shutil.copyfile(reference / name, changed)
    with tables.open_file(str(changed), "a") as h5:
        table = next(iter(h5.walk_nodes("/", "Table")))
        table.attrs.FIELD_0_FILL = np.int32(table.attrs.FIELD_0_FILL)  # same value, other type
        path = table._v_pathname
    want, have = describe(reference / name), describe(changed)
    assert have[path] != want[path]
    assert {node for node in want if have[node] != want[node]} == {path}
