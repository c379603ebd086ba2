"""``python -m worldmodel.cli``: the ``worldmodel`` command."""

import sys

from worldmodel.cli.main import main

sys.exit(main())
