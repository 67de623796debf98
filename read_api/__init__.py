"""read_api."""
