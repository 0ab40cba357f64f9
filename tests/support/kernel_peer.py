"""Kernel-socket clients and servers that tests run in the peer namespace
(`ip netns exec NS python -m tests.support.kernel_peer ...`). Each prints
one JSON line with what it measured, so tests compare digests, not bytes.

    echo  --host H --port 7  --bytes N   send N random bytes, read them back
    sink  --host H --port 9  --bytes N   send N bytes to a discard server
    fetch --host H --port 80 --bytes N   GET /N and check the pattern body
    serve --port P [--mode echo|source --bytes N]   a one-connection server
    hold  --host H --port 80 --count N   N concurrent connections, each served
          [--linger S]                   and held until the server ends them
    diag                                 the stack's --diag-services on kernel
                                         sockets (echo 7, discard 9, HTTP 80)
                                         until SIGTERM

`--congestion NAME` makes the clients' and diag's sockets use that
congestion control (TCP_CONGESTION; root may pick one a namespace's
sysctl would refuse), so a kernel can be compared with a stack that runs
a given one.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import resource
import selectors
import signal
import socket
import threading
import time

CHUNK = 1 << 16
PATTERN = bytes(range(32, 127))  # the diag HTTP body: byte i is PATTERN[i % 95]
DIAG_PORTS = {"echo": 7, "discard": 9, "http": 80}  # stackservice.diag's
MAX_REQUEST_HEAD = 8192


def _pattern(offset: int, length: int) -> bytes:
    """Bytes offset .. offset+length of a diag HTTP body."""
    start = offset % len(PATTERN)
    return (PATTERN * ((start + length) // len(PATTERN) + 1))[start : start + length]


def payload(size: int, seed: int) -> bytes:
    """What `echo`, `sink` and `serve --mode source` send for `--bytes
    size --seed seed`, so a receiver can check every byte."""
    return random.Random(seed).randbytes(size)


def _connect(host: str, port: int, timeout: float, congestion: str | None) -> socket.socket:
    """A connected socket, with `congestion` control from the SYN on."""
    sock = socket.socket()
    try:
        sock.settimeout(timeout)
        _set_congestion(sock, congestion)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _set_congestion(sock: socket.socket, congestion: str | None) -> None:
    if congestion:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())


def echo(
    host: str, port: int, size: int, seed: int, timeout: float, congestion: str | None = None
) -> dict:
    """Send and receive at once (a blocking write-then-read would deadlock
    once both directions' buffers fill)."""
    data = memoryview(payload(size, seed))
    received = hashlib.sha256()
    got = sent = 0
    start = time.monotonic()
    with _connect(host, port, timeout, congestion) as sock:
        sock.setblocking(False)
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while got < size:
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"echo: {got}/{size} bytes back after {timeout}s")
                for _, mask in sel.select(1.0):
                    if mask & selectors.EVENT_WRITE and sent < size:
                        sent += sock.send(data[sent : sent + CHUNK])
                        if sent == size:
                            sock.shutdown(socket.SHUT_WR)
                            sel.modify(sock, selectors.EVENT_READ)
                    if mask & selectors.EVENT_READ:
                        chunk = sock.recv(CHUNK)
                        if not chunk:
                            raise ConnectionError(f"echo: EOF after {got}/{size} bytes")
                        received.update(chunk)
                        got += len(chunk)
            # The server's FIN, within what is left of the timeout (on a
            # lossy wire a lost FIN waits for its retransmission timer).
            left = max(0.0, timeout - (time.monotonic() - start))
            tail = sock.recv(1) if _wait_readable(sock, left) else b"?"
    return {
        "sent_sha256": hashlib.sha256(data).hexdigest(),
        "received_sha256": received.hexdigest(),
        "bytes": got,
        "clean_eof": tail == b"",
        "seconds": time.monotonic() - start,
    }


def _wait_readable(sock: socket.socket, timeout: float) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        return bool(sel.select(timeout))


def sink(
    host: str, port: int, size: int, seed: int, timeout: float, congestion: str | None = None
) -> dict:
    data = payload(size, seed)
    start = time.monotonic()
    with _connect(host, port, timeout, congestion) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        tail = sock.recv(1)  # the discard server closes after our FIN
    return {"bytes": size, "clean_eof": tail == b"", "seconds": time.monotonic() - start}


def fetch(host: str, port: int, size: int, timeout: float, congestion: str | None = None) -> dict:
    start = time.monotonic()
    with _connect(host, port, timeout, congestion) as sock:
        sock.sendall(f"GET /{size} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(CHUNK):
            chunks.append(chunk)
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    expected = _pattern(0, size)
    return {
        "status": head.split(b" ", 2)[1].decode() if head else "",
        "bytes": len(body),
        "body_ok": body == expected,
        "seconds": time.monotonic() - start,
    }


def serve(port: int, mode: str, size: int, seed: int, timeout: float) -> dict:
    """Accept one connection; echo it back, or send `size` bytes and close."""
    with socket.create_server(("0.0.0.0", port), reuse_port=False) as server:
        print(json.dumps({"listening": port}), flush=True)
        server.settimeout(timeout)
        conn, addr = server.accept()
        conn.settimeout(timeout)
        digest = hashlib.sha256()
        total = 0
        with conn:
            if mode == "source":
                data = payload(size, seed)
                conn.sendall(data)
                digest.update(data)
                total = size
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)
            else:
                while chunk := conn.recv(CHUNK):
                    digest.update(chunk)
                    total += len(chunk)
                    conn.sendall(chunk)
    return {"peer": addr[0], "bytes": total, "sha256": digest.hexdigest()}


def hold(host: str, port: int, count: int, timeout: float, linger: float = 0) -> dict:
    """Open `count` connections at once to the HTTP service, keep them all
    open, then send one keep-alive request on each and read each answer;
    with `linger`, print a line once served and keep them open until the
    server ends them (counted as `reset` or `eof`), at most `linger` s."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 256)), hard))
    start = time.monotonic()
    pending, opened, failed = set(), [], 0
    with selectors.DefaultSelector() as sel:
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex((host, port))
            sel.register(sock, selectors.EVENT_WRITE)
            pending.add(sock)
        while pending and time.monotonic() - start < timeout:
            for key, _ in sel.select(1.0):
                sock = key.fileobj
                sel.unregister(sock)
                pending.discard(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    failed += 1
                    sock.close()
                else:
                    opened.append(sock)
        established = len(opened)
        request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        answers: dict[socket.socket, bytes] = {}
        for sock in opened:
            sock.send(request)
            answers[sock] = b""
            sel.register(sock, selectors.EVENT_READ)
        served = 0
        while answers and time.monotonic() - start < timeout:
            for key, _ in sel.select(1.0):
                sock = key.fileobj
                data = sock.recv(CHUNK)
                answers[sock] += data
                head, sep, body = answers[sock].partition(b"\r\n\r\n")
                if not data or (sep and len(body) >= 64):
                    served += head.startswith(b"HTTP/1.1 200") and len(body) == 64
                    sel.unregister(sock)
                    del answers[sock]
    ended = {"reset": 0, "eof": 0}
    if linger:
        print(json.dumps({"served": served}), flush=True)
        ended = _until_ended(opened, linger)
    for sock in opened + list(pending):
        sock.close()
    return {
        "established": established,
        "failed": failed,
        "served": served,
        **ended,
        "seconds": time.monotonic() - start,
    }


def _until_ended(socks: list[socket.socket], timeout: float) -> dict[str, int]:
    """Keep `socks` open until the other side ended each (by a RST or a
    FIN) or `timeout` passed; how many were reset and how many got EOF."""
    ended = {"reset": 0, "eof": 0}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        while sel.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                try:
                    if key.fileobj.recv(CHUNK):
                        continue  # more data: not the end yet
                    ended["eof"] += 1
                except ConnectionResetError:
                    ended["reset"] += 1
                sel.unregister(key.fileobj)
    return ended


# ------------------------------------------- the diag services on kernel TCP


def _serve_echo(conn: socket.socket) -> None:
    while chunk := conn.recv(CHUNK):
        conn.sendall(chunk)


def _serve_discard(conn: socket.socket) -> None:
    while conn.recv(CHUNK):
        pass


def _serve_http(conn: socket.socket) -> None:
    """One `GET /<n>` per connection (what `fetch` sends), answered as the
    stack's diag responder does with `Connection: close`, then closed."""
    request = b""
    while b"\r\n\r\n" not in request and len(request) <= MAX_REQUEST_HEAD:
        chunk = conn.recv(CHUNK)
        if not chunk:
            return
        request += chunk
    target = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
    if not request.startswith(b"GET /") or not (target[1:].isdigit() or target == b"/"):
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return
    size = int(target[1:]) if target[1:] else 64
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        + f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode()
    )
    for offset in range(0, size, CHUNK):
        conn.sendall(_pattern(offset, min(CHUNK, size - offset)))


_DIAG_HANDLERS = {"echo": _serve_echo, "discard": _serve_discard, "http": _serve_http}


def _serve_connection(conn: socket.socket, handler, served: list[int]) -> None:
    # The handlers read until EOF (or the whole request) before closing, so
    # a close never leaves unread bytes behind: no RST from our side.
    with conn, contextlib.suppress(OSError):
        handler(conn)
        served[0] += 1


def _accept_forever(server: socket.socket, handler, served: list[int]) -> None:
    while True:
        conn, _ = server.accept()
        threading.Thread(
            target=_serve_connection, args=(conn, handler, served), daemon=True
        ).start()


def diag(congestion: str | None) -> dict:
    """Serve echo, discard and HTTP on the diag ports, a thread per
    connection, until SIGTERM/SIGINT; prints a ready line first."""
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # threads inherit the mask
    served = [0]
    servers = []
    for name, port in DIAG_PORTS.items():
        server = socket.create_server(("0.0.0.0", port), backlog=64)
        _set_congestion(server, congestion)  # accepted sockets inherit it
        servers.append(server)
        threading.Thread(
            target=_accept_forever, args=(server, _DIAG_HANDLERS[name], served), daemon=True
        ).start()
    print(json.dumps({"listening": sorted(DIAG_PORTS.values())}), flush=True)
    signal.sigwait(stop_signals)
    for server in servers:
        server.close()
    return {"served": served[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["echo", "sink", "fetch", "serve", "hold", "diag"])
    parser.add_argument("--host", default="198.18.0.10")
    parser.add_argument("--port", type=int, help="required but for diag")
    parser.add_argument("--bytes", type=int, default=1 << 20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mode", default="echo", choices=["echo", "source"])
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--linger", type=float, default=0)
    parser.add_argument("--congestion", help="TCP congestion control (default: the system's)")
    args = parser.parse_args()
    if args.port is None and args.action != "diag":
        parser.error(f"{args.action} needs --port")
    cc = args.congestion
    if args.action == "echo":
        result = echo(args.host, args.port, args.bytes, args.seed, args.timeout, cc)
    elif args.action == "sink":
        result = sink(args.host, args.port, args.bytes, args.seed, args.timeout, cc)
    elif args.action == "fetch":
        result = fetch(args.host, args.port, args.bytes, args.timeout, cc)
    elif args.action == "diag":
        result = diag(cc)
    elif args.action == "hold":
        result = hold(args.host, args.port, args.count, args.timeout, args.linger)
    else:
        result = serve(args.port, args.mode, args.bytes, args.seed, args.timeout)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
