"""Scenario 1, the engine limit: raw transformers decode vs the engine's runner vs the engine.

Same as `streamhost bench --scenario engine`; options as there, e.g.
    python benchmarks/engine.py --concurrency 1,8,32 --repeats 3
"""

import sys

from streamhost.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--scenario", "engine", *sys.argv[1:]]))
