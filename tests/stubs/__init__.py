"""Stub servers that speak real providers' documented wire formats, on 127.0.0.1, for tests."""
