import os

from flows.cli import OFFLINE_DEFAULTS

# The same offline settings the `granular` command uses, before any test starts a server.
for name, value in OFFLINE_DEFAULTS.items():
    os.environ.setdefault(name, value)
