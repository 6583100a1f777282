"""Adapters for code written against other messaging libraries.

:mod:`polymsg.compat.oslo_messaging` offers oslo.messaging's public names over
polymsg, so such a service runs on every polymsg transport with its import
line changed.
"""
