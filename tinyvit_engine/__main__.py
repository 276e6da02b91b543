"""python -m tinyvit_engine: the `tinyvit` command."""

from .cli import main

raise SystemExit(main())
