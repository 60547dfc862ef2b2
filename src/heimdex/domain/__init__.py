"""The pure core: models, ports, errors, storage layout. Standard library and msgspec only."""
