#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Publish/subscribe in Python, both sides, talking with each other and with the C examples
(pubsub-publisher, pubsub-subscriber): the same service, the same messages.

    pubsub.py pub example.chat 5     publish, wait for a subscriber, send 5 messages, close
    pubsub.py sub example.chat 5     asyncio subscriber: await every message until the
                                     publisher leaves; exit 0 only if exactly 5 arrived

The package comes from python/ (pip install ./python, or PYTHONPATH=python) and finds the
installed libabd_runtime, or the one $ABD_LIBRARY names. docs/python.md walks through it."""
import asyncio
import sys
import time

import abd
import abd.aio


def publisher(name, count):
    # 64 slots of up to 128 bytes, as the C publisher
    with abd.publish(name, role="producer", capacity=64, slot_size=128) as svc:
        print(f"publisher: published {name} (record {svc.record_name})", flush=True)
        # Wait up to 30 s for a subscriber; running the reactor answers its handshake.
        deadline = time.monotonic() + 30
        while svc.stats()["consumers"] == 0:
            if time.monotonic() > deadline:
                print("publisher: no subscriber came", file=sys.stderr)
                return 1
            svc.run_once(0.01)
        for i in range(1, count + 1):
            svc.push(f"message {i} of {count}".encode(), timeout=5)
        print(f"publisher: sent {count} messages, closing", flush=True)
    return 0  # leaving the with block withdrew the service: subscribers drain, then EPIPE


async def subscriber(name, expect):
    print(f"subscriber: waiting for {name}", flush=True)
    # Waits up to 30 s for the service to appear, without blocking the event loop.
    svc = await abd.aio.open(name, 30, role="consumer")
    print(f"subscriber: opened {name}, published by pid {svc.service.publisher_pid}", flush=True)
    got = 0
    async with svc:
        while True:
            try:
                msg = await svc.pop()  # sleeps in the loop: no thread, no polling
            except BrokenPipeError:
                break  # the publisher left, and everything it sent has been read
            print(f"subscriber: {msg.decode(errors='replace')}", flush=True)
            got += 1
    print(f"subscriber: publisher left after {got} messages", flush=True)
    return 0 if expect < 0 or got == expect else 1


def main(argv):
    if len(argv) < 2 or argv[1] not in ("pub", "sub"):
        print(__doc__, file=sys.stderr)
        return 2
    name = argv[2] if len(argv) > 2 else "example.chat"
    count = int(argv[3]) if len(argv) > 3 else (10 if argv[1] == "pub" else -1)
    if argv[1] == "pub":
        return publisher(name, count)
    return asyncio.run(subscriber(name, count))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
