#!/usr/bin/env python3
"""An example subscriber of ClaudeDo's event log, written without ClaudeDo's code.

It replays the log from a sequence, then follows it live, with plain nats-py, a pull
consumer of its own and the reader role's credentials (`claudedo creds reader --out
reader.json`), and validates every event against the JSON Schema in `events/schema/` (with
the `jsonschema` package). It prints one JSON line per event: its stream sequence, subject,
type and whether it validated.

    python ops/examples/subscriber.py --url nats://127.0.0.1:4222 --creds reader.json
    python ops/examples/subscriber.py ... --position seen.txt   # resume where it stopped

With `--position FILE` it stores the last sequence it processed and starts after it next
time. It exits non-zero when an event does not validate or a sequence is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import jsonschema
import nats
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

STREAM = "CLAUDEDO_EVENTS"
SCHEMA_DIR = Path(__file__).resolve().parent.parent.parent / "events" / "schema"


def stored_position(path: Path | None) -> int:
    """The last sequence processed before (0: none)."""
    if path is None or not path.exists():
        return 0
    return int(path.read_text().strip() or 0)


def store_position(path: Path, seq: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{seq}\n")
    os.replace(tmp, path)


async def follow(args: argparse.Namespace) -> int:
    creds = json.loads(Path(args.creds).read_text())
    schema = json.loads((Path(args.schema_dir) / "Envelope.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    position = Path(args.position) if args.position else None
    start = max(args.from_seq, stored_position(position) + 1)

    # A reader's replies come only to inboxes of its role's own (docs/security.md).
    role = creds.get("role") or creds["user"]
    nc = await nats.connect(
        args.url, user=creds["user"], password=creds["password"], inbox_prefix=f"_INBOX.{role}"
    )
    js = nc.jetstream()
    problems = 0
    expected = start

    async def consumer_from(seq: int) -> Any:
        # A pull consumer of our own: in stream order, from any sequence, no acks; the server
        # drops it a minute after we stop asking.
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq,
            ack_policy=AckPolicy.NONE, inactive_threshold=60.0, mem_storage=True,
            num_replicas=1,
        )  # fmt: skip
        return await js.pull_subscribe("claudedo.evt.>", stream=STREAM, config=config)

    try:
        sub = await consumer_from(expected)
        idle = 0.0
        while args.until_seq is None or expected <= args.until_seq:
            try:
                msgs = await sub.fetch(batch=256, timeout=5.0)
            except nats.errors.TimeoutError:
                idle += 5.0
                if args.idle_exit and idle >= args.idle_exit:
                    break  # nothing new for that long
                continue
            except nats.js.errors.Error:  # the consumer went (a server restart): again
                sub = await consumer_from(expected)
                continue
            idle = 0.0
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                if seq != expected:  # the log denies deletes: its sequences have no gaps
                    print(f"missing sequences {expected}..{seq - 1}", file=sys.stderr)
                    problems += 1
                envelope = json.loads(msg.data)
                errors = [e.message for e in validator.iter_errors(envelope)]
                for error in errors[:3]:
                    print(f"seq {seq}: {error}", file=sys.stderr)
                problems += bool(errors)
                event = envelope.get("event", {}) if isinstance(envelope, dict) else {}
                line = {"seq": seq, "subject": msg.subject, "type": event.get("type"),
                        "valid": not errors}  # fmt: skip
                print(json.dumps(line), flush=True)
                if position is not None:
                    store_position(position, seq)
                expected = seq + 1
                if args.until_seq is not None and expected > args.until_seq:
                    break
    finally:
        await nc.close()
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the NATS server (claudedo info)")
    parser.add_argument("--creds", required=True, help="a reader's credentials file")
    parser.add_argument("--from-seq", type=int, default=1, help="first sequence (default 1)")
    parser.add_argument("--position", help="file keeping the last sequence processed")
    parser.add_argument("--until-seq", type=int, help="stop after this sequence")
    parser.add_argument("--idle-exit", type=float, help="stop after this many idle seconds")
    parser.add_argument("--schema-dir", default=str(SCHEMA_DIR), help="events/schema")
    return asyncio.run(follow(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
