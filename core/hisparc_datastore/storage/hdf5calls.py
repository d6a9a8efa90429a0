"""The few HDF5 calls the writer makes below PyTables, into the libhdf5 PyTables itself loaded.

PyTables builds a Python object for every node it opens or creates (its
``Description``, ``Cols``, ``AttributeSet``): about 5 ms a table, and ~100 kB
kept for each open one. At the network's size that was most of the writer's
time (``../shared/research/writer-10x.md``). HDF5 itself creates a table by
copying an empty one in 0.15 ms and keeps an open dataset for ~25 kB.

The ids PyTables hands out (``File._get_file_id``, a node's ``_v_objectid``) are
valid in the same library, so these calls work on the files PyTables has open.
What they write is what PyTables' own C code writes (see :func:`append_records`).

Private PyTables API used, pinned by the ``tables`` range in pyproject.toml:
``File._get_file_id``, ``Node._v_objectid``, ``Group._g_add_children_names``,
and the bundled libhdf5 itself (found among the libraries the process loaded).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np
import tables

hid_t = ctypes.c_int64
hsize_t = ctypes.c_uint64
herr_t = ctypes.c_int
htri_t = ctypes.c_int

H5P_DEFAULT = 0
H5S_SCALAR = 0
H5S_SELECT_SET = 0
H5F_SCOPE_GLOBAL = 1


def loaded_libhdf5() -> str:
    """The path of the libhdf5 this process loaded with PyTables (a wheel bundles its own)."""
    import tables.hdf5extension  # noqa: F401 - loads it

    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split(maxsplit=5)[-1] if len(line.split()) >= 6 else ""
        if "libhdf5" in Path(path).name and "_hl" not in Path(path).name:
            return path
    raise ImportError("the libhdf5 PyTables uses is not among the loaded libraries")


@functools.cache
def _lib() -> ctypes.CDLL:
    # PyDLL keeps the GIL during each call, as PyTables does for most of its own: no other
    # thread of this process enters HDF5 (not built thread-safe) meanwhile.
    lib = ctypes.PyDLL(loaded_libhdf5())
    signatures = {
        "H5Dopen2": (hid_t, [hid_t, ctypes.c_char_p, hid_t]),
        "H5Dclose": (herr_t, [hid_t]),
        "H5Dget_space": (hid_t, [hid_t]),
        "H5Dget_type": (hid_t, [hid_t]),
        "H5Dset_extent": (herr_t, [hid_t, ctypes.POINTER(hsize_t)]),
        "H5Dwrite": (herr_t, [hid_t, hid_t, hid_t, hid_t, hid_t, ctypes.c_void_p]),
        "H5Sclose": (herr_t, [hid_t]),
        "H5Screate": (hid_t, [ctypes.c_int]),
        "H5Screate_simple": (hid_t, [ctypes.c_int, ctypes.POINTER(hsize_t), ctypes.POINTER(hsize_t)]),
        "H5Sget_simple_extent_dims": (ctypes.c_int, [hid_t, ctypes.POINTER(hsize_t),
                                                     ctypes.POINTER(hsize_t)]),
        "H5Sselect_hyperslab": (herr_t, [hid_t, ctypes.c_int, ctypes.POINTER(hsize_t),
                                         ctypes.POINTER(hsize_t), ctypes.POINTER(hsize_t),
                                         ctypes.POINTER(hsize_t)]),
        "H5Tclose": (herr_t, [hid_t]),
        "H5Tget_size": (ctypes.c_size_t, [hid_t]),
        "H5Aopen": (hid_t, [hid_t, ctypes.c_char_p, hid_t]),
        "H5Aget_type": (hid_t, [hid_t]),
        "H5Aclose": (herr_t, [hid_t]),
        "H5Adelete": (herr_t, [hid_t, ctypes.c_char_p]),
        "H5Acreate2": (hid_t, [hid_t, ctypes.c_char_p, hid_t, hid_t, hid_t, hid_t]),
        "H5Awrite": (herr_t, [hid_t, hid_t, ctypes.c_void_p]),
        "H5Lexists": (htri_t, [hid_t, ctypes.c_char_p, hid_t]),
        "H5Ocopy": (herr_t, [hid_t, ctypes.c_char_p, hid_t, ctypes.c_char_p, hid_t, hid_t]),
        "H5Fflush": (herr_t, [hid_t, ctypes.c_int]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def H5T_STD_I64LE() -> int:  # noqa: N802 - HDF5's name
    """HDF5's little-endian 64-bit integer type (a global the library sets when it starts)."""
    return hid_t.in_dll(_lib(), "H5T_STD_I64LE_g").value


def _check(result: int, what: str) -> int:
    if result < 0:
        raise tables.HDF5ExtError(f"HDF5 {what} failed")
    return result


def file_id(h5: tables.File) -> int:
    return h5._get_file_id()


def flush(h5: tables.File) -> None:
    """One ``H5Fflush`` of the whole file: what PyTables' ``File.flush`` does once per open
    leaf (each leaf's flush is an ``H5Fflush`` of the file) and once more at the end.
    Nothing the writer appends is buffered in Python: its appends go to HDF5 directly."""
    _check(_lib().H5Fflush(file_id(h5), H5F_SCOPE_GLOBAL), "H5Fflush")


def exists(h5: tables.File, path: str) -> bool:
    """Whether the absolute ``path`` names an object (each link of it checked in turn)."""
    lib, fid = _lib(), file_id(h5)
    parts = path.strip("/").split("/")
    for i in range(len(parts)):
        found = _check(lib.H5Lexists(fid, ("/" + "/".join(parts[:i + 1])).encode(), H5P_DEFAULT),
                       f"H5Lexists {path}")
        if not found:
            return False
    return True


class Dataset:
    """An open one-dimensional dataset (a table) and its row count, kept by the writer.

    Appends do what PyTables' ``Table.append`` does for a record array of the table's own
    dtype (``H5TBOappend_records`` then the ``NROWS`` attribute): extend, write the new
    rows in one ``H5Dwrite`` with the dataset's own type as memory type, then set ``NROWS``
    (see :meth:`_set_nrows_attribute`).
    """

    def __init__(self, h5: tables.File, path: str) -> None:
        lib = _lib()
        self.path = path
        self.id = _check(lib.H5Dopen2(file_id(h5), path.encode(), H5P_DEFAULT), f"H5Dopen2 {path}")
        try:
            self.type_id = _check(lib.H5Dget_type(self.id), f"H5Dget_type {path}")
            self.itemsize = int(lib.H5Tget_size(self.type_id))
            space = _check(lib.H5Dget_space(self.id), f"H5Dget_space {path}")
            try:
                dims = (hsize_t * 1)()
                if _check(lib.H5Sget_simple_extent_dims(space, dims, None), path) != 1:
                    raise tables.HDF5ExtError(f"{path} is not one-dimensional")
            finally:
                lib.H5Sclose(space)
        except BaseException:
            self.close()
            raise
        self.nrows = int(dims[0])

    def append(self, records: np.ndarray) -> None:
        """Append ``records`` (C-contiguous, of the table's row size) as new rows."""
        if records.dtype.itemsize != self.itemsize:
            raise ValueError(f"{self.path}: rows of {records.dtype.itemsize} bytes, the table's "
                             f"are {self.itemsize}")
        count = len(records)
        if not count:
            return
        records = np.ascontiguousarray(records)
        lib = _lib()
        start = self.nrows
        # Counted as grown first: if a step below fails, the caller drops this object and
        # the journal's sizes, not this count, say what to cut back to.
        self.nrows = -1
        _check(lib.H5Dset_extent(self.id, (hsize_t * 1)(start + count)), f"H5Dset_extent {self.path}")
        memory = _check(lib.H5Screate_simple(1, (hsize_t * 1)(count), None), "H5Screate_simple")
        try:
            space = _check(lib.H5Dget_space(self.id), f"H5Dget_space {self.path}")
            try:
                _check(lib.H5Sselect_hyperslab(space, H5S_SELECT_SET, (hsize_t * 1)(start), None,
                                               (hsize_t * 1)(count), None), "H5Sselect_hyperslab")
                _check(lib.H5Dwrite(self.id, self.type_id, memory, space, H5P_DEFAULT,
                                    records.ctypes.data), f"H5Dwrite {self.path}")
            finally:
                lib.H5Sclose(space)
        finally:
            lib.H5Sclose(memory)
        self._set_nrows_attribute(start + count)
        self.nrows = start + count

    def _set_nrows_attribute(self, nrows: int) -> None:
        # Written in place: PyTables deletes and recreates it, which costs ~0.3 ms and gives
        # the same attribute: name, type, value and place in the list (tests compare them).
        lib = _lib()
        attribute = _check(lib.H5Aopen(self.id, b"NROWS", H5P_DEFAULT), f"NROWS of {self.path}")
        try:
            value = np.array(nrows, dtype="<i8")
            _check(lib.H5Awrite(attribute, H5T_STD_I64LE(), value.ctypes.data), f"NROWS of {self.path}")
        finally:
            lib.H5Aclose(attribute)

    def close(self) -> None:
        lib = _lib()
        if getattr(self, "type_id", -1) >= 0:
            lib.H5Tclose(self.type_id)
            self.type_id = -1
        if self.id >= 0:
            lib.H5Dclose(self.id)
            self.id = -1


def copy_object(source: tables.File, source_path: str, group: tables.Group, name: str) -> None:
    """Copy the object ``source_path`` of ``source`` as ``name`` into the (PyTables) ``group``,
    whose list of children is then read again, so PyTables sees the new node."""
    _check(_lib().H5Ocopy(file_id(source), source_path.encode(), group._v_objectid, name.encode(),
                          H5P_DEFAULT, H5P_DEFAULT), f"H5Ocopy {source_path} to {group._v_pathname}/{name}")
    group._g_add_children_names()
