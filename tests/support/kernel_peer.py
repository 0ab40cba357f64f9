"""Kernel-socket clients and servers that tests run in the peer namespace
(`ip netns exec NS python -m tests.support.kernel_peer ...`). Each prints
one JSON line with what it measured, so tests compare digests, not bytes.

    echo  --host H --port 7  --bytes N   send N random bytes, read them back
    sink  --host H --port 9  --bytes N   send N bytes to a discard server
    fetch --host H --port 80 --bytes N   GET /N and check the pattern body
    serve --port P [--mode echo|source --bytes N]   a one-connection server
    hold  --host H --port 80 --count N   N concurrent connections, each served
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import selectors
import socket
import time

CHUNK = 1 << 16
PATTERN = bytes(range(32, 127))


def _payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def echo(host: str, port: int, size: int, seed: int, timeout: float) -> dict:
    """Send and receive at once (a blocking write-then-read would deadlock
    once both directions' buffers fill)."""
    data = memoryview(_payload(size, seed))
    received = hashlib.sha256()
    got = sent = 0
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as sock:
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
            tail = sock.recv(1) if _wait_readable(sock, 5) else b"?"
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


def sink(host: str, port: int, size: int, seed: int, timeout: float) -> dict:
    data = _payload(size, seed)
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        tail = sock.recv(1)  # the discard server closes after our FIN
    return {"bytes": size, "clean_eof": tail == b"", "seconds": time.monotonic() - start}


def fetch(host: str, port: int, size: int, timeout: float) -> dict:
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(f"GET /{size} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(CHUNK):
            chunks.append(chunk)
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    expected = (PATTERN * (size // len(PATTERN) + 1))[:size]
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
                data = _payload(size, seed)
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
    keep them open `linger` more seconds (printing a line once served)."""
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
    if linger:
        print(json.dumps({"served": served}), flush=True)
        time.sleep(linger)
    for sock in opened + list(pending):
        sock.close()
    return {
        "established": established,
        "failed": failed,
        "served": served,
        "seconds": time.monotonic() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["echo", "sink", "fetch", "serve", "hold"])
    parser.add_argument("--host", default="198.18.0.10")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bytes", type=int, default=1 << 20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mode", default="echo", choices=["echo", "source"])
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--linger", type=float, default=0)
    args = parser.parse_args()
    if args.action == "echo":
        result = echo(args.host, args.port, args.bytes, args.seed, args.timeout)
    elif args.action == "sink":
        result = sink(args.host, args.port, args.bytes, args.seed, args.timeout)
    elif args.action == "fetch":
        result = fetch(args.host, args.port, args.bytes, args.timeout)
    elif args.action == "hold":
        result = hold(args.host, args.port, args.count, args.timeout, args.linger)
    else:
        result = serve(args.port, args.mode, args.bytes, args.seed, args.timeout)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
