"""Kept for plugins and their suites, which import it by this name:
``hisparc_datastore.eventtype`` is :mod:`hisparc_datastore.plugin.eventtype` itself."""

import sys

from hisparc_datastore.plugin import eventtype as _module

sys.modules[__name__] = _module
