"""Adapters: implementations of the domain ports (database, storage, queue, media, auth)."""
