"""``python -m cascade.definition_schema [--write | --check]``: the generated schema documents."""

import sys

from . import main

sys.exit(main())
