"""`stratus operator` with a datagram counter: every IPMI packet pyghmi sends is counted per
destination port (one port per simulated BMC) and the counts are written to a JSON file
twice a second. Used by bench.py only; the operator itself is unchanged.

    python counting_operator.py COUNTS.json operator --log-format plain ...
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time

from pyghmi.ipmi.private import session

counts: collections.Counter = collections.Counter()
_original = session._io_sendto


def _counted(sock, packet, sockaddr):
    counts[sockaddr[1]] += 1
    return _original(sock, packet, sockaddr)


session._io_sendto = _counted


def _dump(path: str) -> None:
    while True:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump({str(k): v for k, v in counts.items()}, f)
        os.replace(tmp, path)
        time.sleep(0.5)


if __name__ == "__main__":
    threading.Thread(target=_dump, args=(sys.argv[1],), daemon=True).start()
    from stratus.cli import main

    main(args=sys.argv[2:], prog_name="stratus")
