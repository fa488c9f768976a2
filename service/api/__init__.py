"""HTTP layer: thin aiohttp handlers, the JSON error envelope."""
