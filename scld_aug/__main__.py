"""``python -m scld_aug`` (and ``torchrun -m scld_aug``) runs the ``scld-aug`` command line."""

from scld_aug.apps.cli import main

raise SystemExit(main())
