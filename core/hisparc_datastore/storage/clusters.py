"""Which cluster names the day files can hold: the writer names a group ``cluster_<name lower>``.

Checked on every path a station list comes in by (the receiver's reload,
``fetch-stations``, ``config-server``) and on every queue file the writer
reads, so a name readers cannot find never becomes a group.

Tried on PyTables 3 with names of real clusters (Amsterdam, Utrecht, Science
Park, ...), spaces, dashes, digits, quotes, punctuation, non-ASCII letters
and names of 200 characters: each is listed by ``list_nodes('/hisparc')``
and ``walk_nodes`` and found by ``get_node``. Only a group name ending in
``.`` is not: ``list_nodes`` stops at it, so it and every group sorting after
it vanish from publicdb's listing. PyTables' NaturalNameWarning (a name
that is no Python identifier, e.g. one with a space) concerns attribute
access only; publicdb and sapphire list and name groups, so such names stay.
"""

from __future__ import annotations

import re

# The writer refused longer names before this check existed; queue files keep that limit.
MAX_LENGTH = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def cluster_problem(name: object) -> str | None:
    """Why ``name`` cannot be a cluster in the day files, or None when it can."""
    if not isinstance(name, str):
        return f"a {type(name).__name__}, not text"
    if not name:
        return "empty"
    if len(name) > MAX_LENGTH:
        return f"{len(name)} characters, over {MAX_LENGTH}"
    if "/" in name:
        return "holds '/', which would make its group an HDF5 path"
    if "\x00" in name:
        return "holds a NUL character"
    if _CONTROL.search(name):
        return "holds a control character"
    if name.lower().endswith("."):
        return ("ends in '.': PyTables' list_nodes stops at such a group, hiding it and every "
                "cluster sorting after it from readers")
    return None
