"""Kept for plugins and their suites, which import it by this name:
``hisparc_datastore.plugins`` is :mod:`hisparc_datastore.plugin.registry` itself."""

import sys

from hisparc_datastore.plugin import registry as _module

sys.modules[__name__] = _module
