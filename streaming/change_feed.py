"""The change feed: a capped Redis Stream (`RedisKeys.changes`) of what changed in the live state,
appended in the same MULTI/EXEC as the change itself, so a reader never sees a change that was not
applied, nor misses one that was. `ot api` fans it out to WebSocket clients.

Two kinds of entries:

| field | `machines` entry (one per state-writer batch) | `alert` entry (one per alert event) |
|---|---|---|
| `t` | `machines` | `alert` |
| `m` | (empty) | the machine id |
| `l` | (empty) | the machine's line id (empty if unknown) |
| `a` | - | the alert id |
| `d` | JSON list of machine payloads | the alert payload, JSON |

A machine payload holds what changed of one machine: `machine_id` and any of `machine_type`,
`line_id`, `status`, `status_code`, `last_seen` (ms) and `values` (`{metric: {"value", "ts"}}`:
the latest reading per metric the batch carried). Applying payloads in order (a merge, `values`
per metric) gives the machine's state. An `alert` payload is the alert's record after the event
(streaming/alert_lifecycle.py): `event` names it (`opened`, `cleared`, `acknowledged`,
`assigned`, `unassigned`, `escalated`). `ot api` sends each machine of a `machines` entry as a
change of its own (type `machine`), with the entry's id.

`ot api` also keeps its fleet snapshot (streaming/api/operator/fleet.py) from these entries
alone: a machine payload must carry every hash field the same transaction set (in the hash:
`type`, `line`, `status`, `status_code`, `last_seen`, `{metric}`, `{metric}_ts`; a null
`line_id` means unchanged), and an alert payload the record `{p}alerts:active` now holds for
that id (none once `cleared_ms` is set). A write of either without an entry shows in the API
only after its periodic full read (`MAX_AGE_S`).

The stream is trimmed approximately (`XADD MAXLEN ~ OT_CHANGE_FEED_MAXLEN`); entry ids are the
resume points of the WebSocket protocol (docs/api.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from streaming.events.model import Metric

MACHINES = "machines"  # entry kind: the machines one batch changed
MACHINE = "machine"  # what a WebSocket client gets: one machine's change
ALERT = "alert"
_METRICS = frozenset(str(m) for m in Metric)


def machines_entry(payloads: bytes) -> dict[str, Any]:
    """The fields of a `machines` entry (alert entries are written by the lifecycle scripts)."""
    return {"t": MACHINES, "m": "", "l": "", "d": payloads}


def split_machines(payloads: bytes) -> list[tuple[str, str, bytes]]:
    """A `machines` entry's payload -> (machine id, line id, that machine's payload) each."""
    return [
        (d["machine_id"], d.get("line_id") or "", orjson.dumps(d)) for d in orjson.loads(payloads)
    ]


def machine_from_hash(machine_id: str, fields: Mapping[bytes | str, bytes | str]) -> dict[str, Any]:
    """A machine's full state from its Redis hash, in the payload form of the feed."""
    text = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
    values = {
        metric: {"value": float(text[metric]), "ts": int(text.get(f"{metric}_ts", 0))}
        for metric in sorted(_METRICS & text.keys())
    }
    out: dict[str, Any] = {"machine_id": machine_id}
    if "type" in text:
        out["machine_type"] = text["type"]
    if "line" in text:
        out["line_id"] = text["line"]
    if "status" in text:
        out["status"] = text["status"]
    if "status_code" in text:
        out["status_code"] = int(text["status_code"])
    if "last_seen" in text:
        out["last_seen"] = int(text["last_seen"])
    out["values"] = values
    return out


def merge_machine(older: bytes, newer: bytes) -> bytes:
    """Two machine payloads as one (for a client that fell behind): newer fields win, `values`
    merge per metric."""
    old, new = orjson.loads(older), orjson.loads(newer)
    values = {**old.get("values", {}), **new.get("values", {})}
    return orjson.dumps({**old, **new, "values": values})
