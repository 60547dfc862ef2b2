from heimdex.entrypoints.console import run

run()
