"""An APP whose import fails, as a service with a bug at import time does."""

raise RuntimeError("database settings missing")
