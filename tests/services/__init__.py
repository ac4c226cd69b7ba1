"""Runnable services that tests start as subprocesses (``python -m tests.services.<name>``)."""
