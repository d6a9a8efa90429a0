"""``python -m hisparc_datastore``: the ``datastore`` command, where its script is not on PATH."""

import sys

from hisparc_datastore.cli import main

if __name__ == "__main__":
    sys.exit(main())
