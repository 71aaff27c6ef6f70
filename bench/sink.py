"""A minimal SMTP sink for the benchmarks: accepts everything, keeps nothing but counts.

    python bench/sink.py PORT COUNTFILE

Single-threaded (selectors), many connections, PIPELINING offered, so the sink costs
little CPU next to what it measures. On SIGTERM it writes "<messages> <bytes>" to COUNTFILE.
Never for tests: the test suite uses aiosmtpd.
"""

from __future__ import annotations

import selectors
import signal
import socket
import sys

EHLO = b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 104857600\r\n"


class Conn:
    __slots__ = ("buf", "data", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.data = False


def serve(port: int, countfile: str) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    count = 0
    size = 0
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    while running:
        for key, _ in sel.select(0.2):
            if key.data is None:
                sock, _ = listener.accept()
                sock.setblocking(True)
                sock.sendall(b"220 sink ESMTP\r\n")
                sel.register(sock, selectors.EVENT_READ, Conn(sock))
                continue
            conn: Conn = key.data
            chunk = conn.sock.recv(1 << 18)
            if not chunk:
                sel.unregister(conn.sock)
                conn.sock.close()
                continue
            conn.buf += chunk
            out = []
            closing = False
            while True:
                if conn.data:
                    if conn.buf.startswith(b".\r\n"):
                        end, skip = 0, 3
                    else:
                        end = conn.buf.find(b"\r\n.\r\n")
                        skip = 5
                        if end < 0:
                            break
                    size += end
                    count += 1
                    conn.buf = conn.buf[end + skip :]
                    conn.data = False
                    out.append(b"250 2.0.0 queued\r\n")
                    continue
                line_end = conn.buf.find(b"\r\n")
                if line_end < 0:
                    break
                verb = conn.buf[:4].upper()
                conn.buf = conn.buf[line_end + 2 :]
                if verb in (b"EHLO",):
                    out.append(EHLO)
                elif verb == b"DATA":
                    conn.data = True
                    out.append(b"354 go ahead\r\n")
                elif verb == b"QUIT":
                    out.append(b"221 bye\r\n")
                    closing = True
                    break
                else:
                    out.append(b"250 2.0.0 ok\r\n")
            if out:
                conn.sock.sendall(b"".join(out))
            if closing:
                sel.unregister(conn.sock)
                conn.sock.close()
    with open(countfile, "w") as f:
        f.write(f"{count} {size}\n")


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
