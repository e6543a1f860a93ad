"""The shell around the pure machines: HTTP, the Redis store, timers, the outbox, providers."""
