"""The day files: one HDF5 file per UTC day, in the layout publicdb and sapphire read.

``layout``     paths, groups, tables and blobs of a day file, and bulk appends into them
``vlblobs``    appends a batch of blobs to a ``blobs`` VLArray in one HDF5 write
``hdf5calls``  the HDF5 calls made below PyTables (template copies, table appends, one flush)
``reserve``    room set aside in a day file before a batch adds a node, so no write meets a full disk
``openfiles``  the day files the writer has open, the least recently used closed first
``heldfiles``  day files a reader holds open, and the uploads waiting for them
``contents``   reads day files back into comparable rows (checks, rebuilds, crash tests)
``errors``     failures while storing told apart: a full disk, a reader's lock, HDF5 damage
``clusters``   which cluster names a day file can hold as a group (``cluster_problem``)
``undo``       clears what a batch that never finished wrote past the journaled rows
``verify``     reads day files back node by node and blob by blob, and names what fails
"""

from hisparc_datastore.storage.contents import compare, read_contents
from hisparc_datastore.storage.errors import StorageError, describe, disk_full, held_by_another
from hisparc_datastore.storage.heldfiles import HeldFiles
from hisparc_datastore.storage.layout import BLOBS, DayFile, date_of_day_file, day_file_path, station_path
from hisparc_datastore.storage.openfiles import OpenFiles

__all__ = [
    "BLOBS", "DayFile", "HeldFiles", "OpenFiles", "StorageError", "compare", "date_of_day_file",
    "day_file_path", "describe", "disk_full", "held_by_another", "read_contents", "station_path",
]
