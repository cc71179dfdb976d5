"""`uhd rollback --reason TEXT`: give the alias `champion` back to the previous champion.

"Previous" is read from the promotion log kept in the registry (so it follows the tracking URI in use):
promotions push a champion, rollbacks pop one, so two rollbacks go back two promotions. Without an earlier
champion it exits 2 with a message and changes nothing. The rollback itself is logged.
"""

from __future__ import annotations

import argparse
import sys

from cli.promote import add_common, open_registry, report
from components.tracking.registry import RegistryError, rollback


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uhd rollback", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(parser)
    args = parser.parse_args(argv)
    registry, _ = open_registry(args)
    try:
        outcome = rollback(registry, args.reason, args.log)
    except RegistryError as err:
        print(f"uhd rollback: {err}", file=sys.stderr)
        return 2
    report(outcome, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
