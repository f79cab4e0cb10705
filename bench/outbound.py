"""Memory of one metric query and one webhook call answered 150 MiB, each made by a process of its own.

The reply comes from a loopback server; the caller's peak RSS is reset just before the call (Linux
``clear_refs``), so ``peak_mib - before_mib`` is what the call itself held. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from tests.providers.hostile import REPLY_MIB, huge_reply_rss


async def measure(reply_mib: int) -> dict[str, object]:
    result: dict[str, object] = {"reply_mib": reply_mib}
    for kind in ("metric", "webhook"):
        report = await huge_reply_rss(kind, reply_mib)
        result[f"{kind}_rss_before_mib"] = round(report["before_mib"], 1)
        result[f"{kind}_rss_peak_mib"] = round(report["peak_mib"], 1)
        result[f"{kind}_reply_written_mib"] = report["written_mib"]
        result[f"{kind}_outcome"] = report["outcome"][:80]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reply-mib", type=int, default=REPLY_MIB)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.reply_mib))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
