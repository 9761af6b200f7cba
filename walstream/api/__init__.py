"""The WriteToLog HTTP API (aiohttp)."""
