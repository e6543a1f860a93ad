"""The HTTP API (aiohttp): routes of contract section 4, one error envelope, API-key auth."""
