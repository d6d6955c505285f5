"""``python -m cascade.definition.schema [--write | --check]``: the generated schema documents."""

import sys

from cascade.definition.schema import main

sys.exit(main())
