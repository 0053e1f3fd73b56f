"""The `recsys` command line: thin typer commands over the packages (one module per command group)."""
