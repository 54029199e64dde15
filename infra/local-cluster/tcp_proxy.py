"""A TCP forwarder: ``python tcp_proxy.py LISTEN_HOST:PORT TARGET_HOST:PORT``.

The local cluster's S3 endpoint (ial-head:5000) is this proxy in front of the moto server, which
keeps its buckets in memory: stopping and starting the endpoint is then what a restart of the S3
service looks like to its clients (connections refused, then served again) without losing what
was stored.
"""

import asyncio
import sys


async def _pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main(listen: str, target: str) -> None:
    lhost, lport = listen.rsplit(":", 1)
    thost, tport = target.rsplit(":", 1)

    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(thost, int(tport))
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, lhost, int(lport), reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
