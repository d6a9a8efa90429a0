"""Small helpers every layer uses.

``brief``    any value a station sent in a few dozen characters
``durable``  files that after a crash are whole or absent
``faults``   named crash points (``DATASTORE_CRASH_AT``)
"""
