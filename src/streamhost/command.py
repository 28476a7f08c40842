"""What every terminal command on a gateway shares: `CommandError`, a failure whose message is
the one line the user sees, the ``--gateway`` option, and `gateway_command`, which runs a
command with that URL resolved and turns any failure into one short line (the cause, then
the next step: ``see: streamhost logs NAME`` for a model's failure) and an exit status."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from streamhost.endpoints.clients import GATEWAY_URL_ENV, default_gateway_url

__all__ = ["CommandError", "gateway_command", "gateway_option"]


class CommandError(Exception):
    """A command cannot go on; the message is the one line the user sees."""


def gateway_option() -> argparse.ArgumentParser:
    """A parent parser holding ``--gateway URL``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--gateway",
        default=None,
        metavar="URL",
        help=f"gateway URL (default ${GATEWAY_URL_ENV} or http://127.0.0.1:8080)",
    )
    return common


def gateway_command(
    name: str, body: Callable[[argparse.Namespace, str], int]
) -> Callable[[argparse.Namespace], int]:
    """Run ``body`` with the gateway URL resolved; any failure is one line and exit code 1
    (130 after Ctrl-C). A model's failure points at the logs of the endpoint ``args.name``."""

    def run(args: argparse.Namespace) -> int:
        gateway_url = (args.gateway or default_gateway_url()).rstrip("/")
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            # botocore narrates at INFO ("Found credentials in ..."): noise in a terminal tool.
            logging.getLogger("botocore").setLevel(logging.WARNING)
        try:
            return body(args, gateway_url)
        except CommandError as error:
            print(f"streamhost {name}: {error}", file=sys.stderr)
        except KeyboardInterrupt:
            print(f"streamhost {name}: interrupted", file=sys.stderr)
            return 130
        except Exception as error:
            from streamhost.endpoints.errors import describe_error

            endpoint = getattr(args, "name", None)
            message = describe_error(error, gateway_url, endpoint)
            print(f"streamhost {name}: {message}", file=sys.stderr)
        return 1

    return run
