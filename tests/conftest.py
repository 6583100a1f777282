"""Shared pytest configuration of polymsg's core tests."""

# pytester runs pytest in a subprocess: the plugin tests use it to run the
# shipped suite exactly as a user's command line would.
pytest_plugins = ["pytester"]
