"""``python -m service.ops.healthcheck``: exit 0 when the local server is ready (``GET /readyz`` answers 200).

The container's HEALTHCHECK (Dockerfile, docker-compose.yml): the serving image has no curl, and the
standard library is enough. It reads the server's own ``SD_HOST`` and ``SD_PORT``; a wildcard address is
reached on loopback. Exit 1 with one line on stderr otherwise (Docker keeps it in ``docker inspect``).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def readiness_url(host: str, port: str) -> str:
    if host in WILDCARDS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{port}/readyz"


def main() -> int:
    url = readiness_url(os.environ.get("SD_HOST", "127.0.0.1"), os.environ.get("SD_PORT", "8000"))
    try:
        with urllib.request.urlopen(url, timeout=4) as answer:
            return 0 if answer.status == 200 else 1
    except urllib.error.HTTPError as exc:  # 503 while loading, or draining on SIGTERM
        print(f"{url}: {exc.code} {exc.read(300).decode(errors='replace')}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
