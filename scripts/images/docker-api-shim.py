#!/usr/bin/env python3
"""Docker API version shim: lets new clients talk to an older Docker engine.

Why: testcontainers 0.27 (through bollard 0.20) sends every request as
/v1.52/..., with no version negotiation, and an engine whose newest API is
older (Debian's docker.io 20.10 speaks 1.41) answers each with
"client version 1.52 is too new". This proxy listens on a unix socket (normally
/var/run/docker.sock), forwards everything to the real engine's socket, and
rewrites a too-new "/vX.Y/" prefix in each request line to the engine's own
version. Request bodies, responses, streamed logs and hijacked (attach/exec)
connections pass through byte for byte. Older engines ignore request fields
they do not know, and the client's models treat missing response fields as
absent, which is enough for what testcontainers does (create, copy files in,
start, inspect, follow logs, exec, remove).

Usage: docker-api-shim.py LISTEN_SOCKET ENGINE_SOCKET
Stdlib only; started in the background by scripts/test-prereqs.sh.
"""

import asyncio
import json
import os
import re
import socket
import sys

VERSION_PREFIX = re.compile(rb"^/v(\d+)\.(\d+)(?=/)")
CHUNK = 64 * 1024


def engine_api_version(engine_path: str) -> tuple[int, int]:
    """Asks the engine (unversioned GET /version) for its newest API version."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(engine_path)
        s.sendall(b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n")
        data = b""
        while chunk := s.recv(CHUNK):
            data += chunk
    body = data.split(b"\r\n\r\n", 1)[1]
    major, minor = json.loads(body)["ApiVersion"].split(".")
    return int(major), int(minor)


class Shim:
    def __init__(self, engine_path: str, engine_version: tuple[int, int]):
        self.engine_path = engine_path
        self.engine_version = engine_version
        self.engine_prefix = b"/v%d.%d" % engine_version

    def rewrite_target(self, target: bytes) -> bytes:
        m = VERSION_PREFIX.match(target)
        if m and (int(m[1]), int(m[2])) > self.engine_version:
            return self.engine_prefix + target[m.end():]
        return target

    async def handle(self, client_r, client_w):
        try:
            engine_r, engine_w = await asyncio.open_unix_connection(self.engine_path)
        except OSError as e:
            print(f"docker-api-shim: cannot reach the engine at {self.engine_path}: {e}", flush=True)
            client_w.close()
            return
        upstream = asyncio.create_task(self.requests(client_r, engine_w))
        downstream = asyncio.create_task(self.copy(engine_r, client_w))
        await asyncio.wait([upstream, downstream], return_when=asyncio.FIRST_COMPLETED)
        # The engine closing ends the exchange; the client closing only ends
        # its half (the engine may still be streaming an answer).
        if downstream.done():
            upstream.cancel()
        else:
            await downstream
        for w in (engine_w, client_w):
            w.close()

    async def copy(self, r, w, n=None):
        """Copies n bytes (or until EOF when n is None) from r to w."""
        while n is None or n > 0:
            data = await r.read(CHUNK if n is None else min(CHUNK, n))
            if not data:
                if n is not None:
                    raise ConnectionError("peer closed in the middle of a body")
                break
            w.write(data)
            await w.drain()
            if n is not None:
                n -= len(data)

    async def requests(self, r, w):
        """Client -> engine: one HTTP/1.1 request after another (keep-alive)."""
        try:
            while True:
                try:
                    head = await r.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break  # client done
                request_line, _, rest = head.partition(b"\r\n")
                method, target, version = request_line.split(b" ", 2)
                w.write(b" ".join((method, self.rewrite_target(target), version)) + b"\r\n" + rest)
                headers = {}
                for line in rest.split(b"\r\n"):
                    name, sep, value = line.partition(b":")
                    if sep:
                        headers[name.strip().lower()] = value.strip().lower()
                if b"chunked" in headers.get(b"transfer-encoding", b""):
                    while True:
                        size_line = await r.readuntil(b"\r\n")
                        w.write(size_line)
                        size = int(size_line.split(b";")[0], 16)
                        if size == 0:
                            # optional trailers, then the blank line
                            while (line := await r.readuntil(b"\r\n")) != b"\r\n":
                                w.write(line)
                            w.write(b"\r\n")
                            break
                        await self.copy(r, w, size + 2)  # data + CRLF
                else:
                    await self.copy(r, w, int(headers.get(b"content-length", b"0")))
                await w.drain()
                if b"upgrade" in headers.get(b"connection", b"") or b"upgrade" in headers:
                    # attach / exec hijack: from here on it is a raw stream.
                    await self.copy(r, w)
                    break
            if w.can_write_eof():
                w.write_eof()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as e:
            print(f"docker-api-shim: dropping a connection: {e!r}", flush=True)
            w.close()


async def main(listen_path: str, engine_path: str):
    version = engine_api_version(engine_path)
    shim = Shim(engine_path, version)
    if os.path.exists(listen_path):
        os.unlink(listen_path)
    server = await asyncio.start_unix_server(shim.handle, path=listen_path)
    os.chmod(listen_path, 0o660)
    print(
        f"docker-api-shim: {listen_path} -> {engine_path} "
        f"(newer API versions rewritten to {version[0]}.{version[1]})",
        flush=True,
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2]))
