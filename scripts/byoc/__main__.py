"""``python -m byoc`` is the ``byoc`` command."""

import sys

from byoc.cli import main

sys.exit(main())
