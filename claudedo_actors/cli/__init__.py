"""The `claudedo` command line: commands, the client of the node's API, rendering."""

from claudedo_actors.cli.commands import main

__all__ = ["main"]
