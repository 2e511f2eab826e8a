import sys

from ftvpe_core import cli

sys.exit(cli.main())
