"""`python -m claudedo_actors` runs the CLI."""

import sys

from claudedo_actors.cli.commands import main

sys.exit(main())
