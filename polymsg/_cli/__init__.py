"""Implementation of the ``polymsg`` command line (see :mod:`polymsg.cli`)."""
