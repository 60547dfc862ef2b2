import sys

from heimdex.entrypoints.cli import main

sys.exit(main())
