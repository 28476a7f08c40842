"""Scenario 2, the model server: streamhost vs `transformers serve --continuous-batching`.

Same as `streamhost bench --scenario server`; options as there, e.g.
    python benchmarks/server.py --concurrency 32 --new 64 --repeats 3
"""

import sys

from streamhost.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--scenario", "server", *sys.argv[1:]]))
