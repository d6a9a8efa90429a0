"""Kept for plugins and their suites, which import it by this name:
``hisparc_datastore.decoding`` is :mod:`hisparc_datastore.codec.decoding` itself."""

import sys

from hisparc_datastore.codec import decoding as _module

sys.modules[__name__] = _module
