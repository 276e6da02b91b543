"""python -m tinyvit_engine.bench: see peers.py."""

from .peers import main

main()
