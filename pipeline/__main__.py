"""`python -m pipeline` is the same as the `distillm` console script."""

from pipeline.cli import main

raise SystemExit(main())
