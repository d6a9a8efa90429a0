"""Appends a batch of blobs to a ``blobs`` VLArray in one HDF5 write, below PyTables.

PyTables has no multi-row append for a VLArray: ``VLArray.append`` extends the
dataset by one row and writes one row per call, with Python conversions
around it, and it was half the writer's time. Here all of a batch's blobs of
one station go in one ``H5Dwrite`` of a variable-length uint8 selection,
called through ctypes into the very libhdf5 PyTables has loaded, on the
dataset id PyTables opened. The rows on disk are the same as
``VLArray.append`` makes (tests read every row back).

The trap (see /work/shared/research/hdf5-append-speed.md): PyTables keeps its
own row counter in the node object, which this write leaves stale; a later
``append`` or ``truncate`` through that object would cut the dataset back on
disk. So the node is closed after every write, and whoever appends next
re-fetches it from the file, which reads the true row count.

Private PyTables API used, and pinned by the ``tables`` range in
pyproject.toml: ``Leaf._v_objectid`` (the HDF5 dataset id). Where the
library cannot be found the public per-blob append is used instead.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tables
import tables.hdf5extension  # loads libhdf5 into this process

_hid_t = ctypes.c_int64
_hsize_t = ctypes.c_uint64
_H5S_SELECT_SET = 0
_H5P_DEFAULT = 0


@functools.cache
def _libhdf5() -> ctypes.CDLL | None:
    """The libhdf5 that PyTables loaded (opening it again by path returns the same copy),
    or None when it cannot be told apart."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = {line.split(None, 5)[-1] for line in maps.splitlines()
             if "/libhdf5" in line and "libhdf5_hl" not in line and "/" in line.split(None, 5)[-1]}
    if len(paths) != 1:  # none, or two libraries (h5py's as well): do not guess
        return None
    lib = ctypes.CDLL(paths.pop())
    for name, restype, argtypes in [
        ("H5Iis_valid", ctypes.c_int, [_hid_t]),
        ("H5Dget_space", _hid_t, [_hid_t]),
        ("H5Dget_type", _hid_t, [_hid_t]),
        ("H5Dset_extent", ctypes.c_int, [_hid_t, ctypes.POINTER(_hsize_t)]),
        ("H5Sget_simple_extent_dims", ctypes.c_int,
         [_hid_t, ctypes.POINTER(_hsize_t), ctypes.POINTER(_hsize_t)]),
        ("H5Sselect_hyperslab", ctypes.c_int, [_hid_t, ctypes.c_int, ctypes.POINTER(_hsize_t),
                                               ctypes.c_void_p, ctypes.POINTER(_hsize_t), ctypes.c_void_p]),
        ("H5Screate_simple", _hid_t, [ctypes.c_int, ctypes.POINTER(_hsize_t), ctypes.c_void_p]),
        ("H5Dwrite", ctypes.c_int, [_hid_t, _hid_t, _hid_t, _hid_t, _hid_t, ctypes.c_void_p]),
        ("H5Sclose", ctypes.c_int, [_hid_t]),
        ("H5Tclose", ctypes.c_int, [_hid_t]),
    ]:
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def fast_path_available() -> bool:
    return _libhdf5() is not None


def append_blobs(node: tables.VLArray, blobs: Sequence[bytes]) -> int:
    """Append ``blobs`` as rows of ``node`` (a VLStringAtom VLArray), then close the node.

    Returns the row count after the append. ``node`` is closed even when
    the write fails: re-fetch it from the file before using it again.
    """
    lib = _libhdf5()
    try:
        if lib is None or not blobs:
            for blob in blobs:
                node.append(blob)
            return int(node.nrows)
        return _write(lib, node._v_objectid, blobs)
    finally:
        node._f_close()


def _check(result: int, what: str) -> int:
    if result < 0:
        raise tables.HDF5ExtError(f"{what} failed while appending blobs")
    return result


def _write(lib: ctypes.CDLL, dataset: int, blobs: Sequence[bytes]) -> int:
    if lib.H5Iis_valid(dataset) <= 0:
        raise tables.HDF5ExtError("the blobs dataset id is not valid in the loaded libhdf5")
    count = len(blobs)
    data = b"".join(blobs)
    lengths = np.fromiter(map(len, blobs), dtype=np.uint64, count=count)
    # hvl_t {size_t len; void *p} per row, pointing into one joined buffer that outlives the write
    vl = np.zeros((count, 2), dtype=np.uint64)
    vl[:, 0] = lengths
    if data:
        base = np.frombuffer(data, dtype=np.uint8).ctypes.data
        starts = np.zeros(count, dtype=np.uint64)
        np.cumsum(lengths[:-1], out=starts[1:])
        vl[:, 1] = np.where(lengths > 0, starts + np.uint64(base), np.uint64(0))
    space = _check(lib.H5Dget_space(dataset), "H5Dget_space")
    try:
        rows = _hsize_t(0)
        _check(lib.H5Sget_simple_extent_dims(space, ctypes.byref(rows), None), "H5Sget_simple_extent_dims")
        start = rows.value  # the true row count, from HDF5 itself
    finally:
        lib.H5Sclose(space)
    total = _hsize_t(start + count)
    _check(lib.H5Dset_extent(dataset, ctypes.byref(total)), "H5Dset_extent")
    file_space = _check(lib.H5Dget_space(dataset), "H5Dget_space")
    memory_space = memory_type = -1
    try:
        first, number = _hsize_t(start), _hsize_t(count)
        _check(lib.H5Sselect_hyperslab(file_space, _H5S_SELECT_SET, ctypes.byref(first), None,
                                       ctypes.byref(number), None), "H5Sselect_hyperslab")
        memory_space = _check(lib.H5Screate_simple(1, ctypes.byref(number), None), "H5Screate_simple")
        # the dataset's own type (a sequence of uint8) as the memory type: no conversion
        memory_type = _check(lib.H5Dget_type(dataset), "H5Dget_type")
        _check(lib.H5Dwrite(dataset, memory_type, memory_space, file_space, _H5P_DEFAULT,
                            vl.ctypes.data), "H5Dwrite")
    finally:
        if memory_type >= 0:
            lib.H5Tclose(memory_type)
        if memory_space >= 0:
            lib.H5Sclose(memory_space)
        lib.H5Sclose(file_space)
    return start + count
