"""A plain TCP relay for the network-partition drill: listen on `--listen` at each port and pass
the bytes to the same port on `--to`. One runs inside the drill's network namespace (its
loopback, where the consumers look for Kafka and Redis) towards the host end of a veth pair,
another on that host end towards the real servers on the host's loopback, so every byte between
the consumers and the servers crosses the veth pair, where `tc netem` can delay, drop or cut it.

    python -m ot_tools.drill.relay --listen 127.0.0.1 --to 169.254.77.1 25092 25093
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from functools import partial


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _handle(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, host: str, port: int
) -> None:
    try:
        up_r, up_w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=10)
    except (OSError, TimeoutError):
        client_w.close()
        return
    await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))


async def serve(listen: str, to: str, ports: list[int]) -> None:
    servers = [
        await asyncio.start_server(partial(_handle, host=to, port=p), listen, p, reuse_address=True)
        for p in ports
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"relay {listen} -> {to}: {ports}", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--to", required=True)
    parser.add_argument("ports", nargs="+", type=int)
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.to, args.ports))


if __name__ == "__main__":
    main()
