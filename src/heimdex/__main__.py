import sys

from heimdex.entrypoints.console import main

sys.exit(main())
