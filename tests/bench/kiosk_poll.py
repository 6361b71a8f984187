"""The scale benchmark's kiosk: asks for the kiosk state once a second from its own process.

A kiosk is a browser in its own process, so its HTTP client's cost is not the controller's:
run here, it is not counted in the controller's CPU figure (it was an eighth of the samples
when the benchmark asked in-process). One keep-alive connection, as a browser keeps it;
each answer prints ``<status> <milliseconds>`` on its own line.

    python -m tests.bench.kiosk_poll HOST PORT
"""

from __future__ import annotations

import http.client
import sys
import time

PATH = "/api/v1/kiosk/state"


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    conn: http.client.HTTPConnection | None = None
    while True:
        started = time.perf_counter()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=30)
            conn.request("GET", PATH)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except (
            OSError,
            http.client.HTTPException,
        ):  # the server closed the idle connection: a new one, as a browser does
            if conn is not None:
                conn.close()
            conn, status = None, 0
        print(f"{status} {(time.perf_counter() - started) * 1000:.3f}", flush=True)
        time.sleep(1.0)


if __name__ == "__main__":
    main()
