"""Scenario 3, the gateway relay: direct vs gateway vs nginx on `synthetic:5`.

Same as `streamhost bench --scenario gateway` (and `--scenario e2e` for the `tiny` model
end to end through the gateway); options as there, e.g.
    python benchmarks/gateway.py --repeats 3
"""

import sys

from streamhost.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--scenario", "gateway", *sys.argv[1:]]))
