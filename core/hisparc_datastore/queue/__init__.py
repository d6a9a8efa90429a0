"""The on-disk queue between receiver and writer: where an upload file is tells what
has happened to it.

``folders``     ``Queue``: the folders (tmp, incoming, partial, ...) and the writer's claims
``quarantine``  setting aside, quarantine, refused uploads kept, and the listing of them
``requeue``     a held upload back into incoming/, never one stored meanwhile
``archive``     stored uploads kept for rebuilds: archive, compress, prune, read back
``names``       what a queue file's name tells: suffixes, the station it is from
``holding``     what quarantine/ and suspicious/ keep per station and kind, and pruning by age
"""

from hisparc_datastore.queue.folders import QUEUE_DIRS, REASON_SUFFIX, Queue, read_archived

__all__ = [
    "QUEUE_DIRS", "Queue", "REASON_SUFFIX", "read_archived",
]
