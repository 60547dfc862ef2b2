"""Entrypoints: HTTP (Litestar), the worker and the CLI. Thin: translate, call a use case."""
