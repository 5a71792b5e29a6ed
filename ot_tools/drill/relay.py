"""A fault-injecting TCP relay for the network-partition drill: listen on `--listen` at each port
and pass the bytes to the same port on `--to`, delayed and with "lost" segments held back as the
`--control` file says (for kernels without `tc netem`, as this machine's). One runs inside the
drill's network namespace (its loopback, where the consumers look for Kafka and Redis) towards
the host end of a veth pair,
another on that host end towards the real servers on the host's loopback, so every byte between
the consumers and the servers crosses the veth pair, which the drill can cut (link down).

    python -m ot_tools.drill.relay --listen 127.0.0.1 --to 169.254.77.1 25092 25093
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import time
from functools import partial
from pathlib import Path


class Faults:
    """What the relay does to the bytes now, read from the control file (JSON: `delay_ms`,
    `loss`, `loss_hold_ms`) at most every 0.2 s; no file: pass them on untouched."""

    def __init__(self, control: Path | None) -> None:
        self.control, self.read_at = control, 0.0
        self.now: dict[str, float] = {}

    def current(self) -> dict[str, float]:
        t = time.monotonic()
        if self.control is not None and t - self.read_at > 0.2:
            self.read_at = t
            try:
                self.now = json.loads(self.control.read_text())
            except (OSError, ValueError):
                self.now = {}
        return self.now


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, faults: Faults, rng: random.Random
) -> None:
    """Pass the bytes on; with a delay, each chunk leaves `delay_ms` after it came (the stream
    keeps its throughput); a "lost" chunk (probability `loss`) is held `loss_hold_ms` longer, and
    everything behind it waits too, as TCP's retransmission makes a lost segment do."""
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

    async def send() -> None:
        try:
            while (item := await queue.get()) is not None:
                at, data = item
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    sender = asyncio.create_task(send())
    last = 0.0
    try:
        while data := await reader.read(65536):
            f = faults.current()
            at = time.monotonic() + f.get("delay_ms", 0) / 1000
            if f.get("loss") and rng.random() < f["loss"]:
                at += f.get("loss_hold_ms", 1000) / 1000
            last = max(last, at)
            queue.put_nowait((last, data))
    except (ConnectionError, OSError):
        pass
    finally:
        queue.put_nowait(None)
        await sender


async def _handle(
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    host: str,
    port: int,
    faults: Faults,
) -> None:
    try:
        up_r, up_w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=10)
    except (OSError, TimeoutError):
        client_w.close()
        return
    rng = random.Random()
    await asyncio.gather(_pipe(client_r, up_w, faults, rng), _pipe(up_r, client_w, faults, rng))


async def serve(listen: str, to: str, ports: list[int], control: Path | None = None) -> None:
    faults = Faults(control)
    servers = [
        await asyncio.start_server(
            partial(_handle, host=to, port=p, faults=faults), listen, p, reuse_address=True
        )
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
    parser.add_argument("--control", type=Path, default=None, help="JSON file of faults")
    parser.add_argument("ports", nargs="+", type=int)
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.to, args.ports, args.control))


if __name__ == "__main__":
    main()
