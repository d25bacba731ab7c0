"""HTTP plumbing shared by the hub and node APIs (aiohttp)."""
