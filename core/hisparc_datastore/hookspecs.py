"""Kept for plugins and their suites, which import it by this name:
``hisparc_datastore.hookspecs`` is :mod:`hisparc_datastore.plugin.hookspecs` itself."""

import sys

from hisparc_datastore.plugin import hookspecs as _module

sys.modules[__name__] = _module
