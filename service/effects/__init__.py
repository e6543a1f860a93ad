"""Performing committed effects: outbox entries (`entries`), the dispatcher that reads them
(`dispatcher`), and their handlers (`handlers` for SMS, calls and pushes, `callbacks` for clients)."""
