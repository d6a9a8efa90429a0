"""The writer: drains the queue into the day files, each batch exactly once
(docs/exactly-once.md).

``service``   ``Writer``: claims uploads and stores them batch by batch, retrying, isolating
``batch``     stores one batch exactly once: decode, screen, rows, journal, append, release
``journal``   the transaction record: which uploads are being applied, and to what
``context``   the settings, queue, journal and open day files batch and recovery share
``prepare``   one claimed queue file into rows per day, blobs and refused events
``prefetch``  prepares the next batches in a second process while this one is appended
``rows``      a station's events into one record array per table (the hot path)
``recovery``  finishes or undoes what the journal says, heals damaged day files
``rebuild``   ``datastore rebuild``: a day file again from the archive
``tidying``   idle work: compress archived uploads, drop those past retention
``lock``      one writer per ``data_dir``
``state``     what the writer did lately, in ``writer-state.json``, for ``datastore status``
``metrics``   the writer's Prometheus metrics over HTTP
``reasons``   the fixed kinds of quarantine reasons, for metric labels and summaries
"""

from hisparc_datastore.writer.service import Tally, Writer

__all__ = [
    "Tally", "Writer",
]
