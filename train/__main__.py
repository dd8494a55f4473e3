"""``python -m train``: see :mod:`train.train`."""

from train.train import main

raise SystemExit(main())
