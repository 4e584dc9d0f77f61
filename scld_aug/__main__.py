"""``python -m scld_aug`` (and ``torchrun -m scld_aug``) runs the ``scld-aug`` command line."""

from scld_aug.cli import main

raise SystemExit(main())
