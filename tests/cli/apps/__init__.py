"""Services the CLI tests load as APPs (``tests.cli.apps.<module>:<attribute>``)."""
