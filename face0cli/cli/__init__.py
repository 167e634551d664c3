"""The command line: Typer adapters over the library."""
