"""ClaudeDo's node: actors, API, CLI. Kept import-light so the CLI starts fast."""

__all__: list[str] = []
