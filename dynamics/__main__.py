"""`python -m dynamics` is `python -m dynamics.probe`."""

import sys

from dynamics.probe import main

sys.exit(main())
