"""hostile-input: hostile payloads mixed one to one with valid readings into Kafka: random bytes,
truncated Avro, a wrong magic byte, NaN and infinities, 1 MiB messages, wrong JSON types,
SQL-like and odd Unicode machine ids. Every bad one must be dead-lettered with its reason, every
valid one landed and counted, and no consumer may crash. Then the same through the webhook
(`ot api`): hostile bodies and readings answered with a 4xx problem+json (never a 5xx), bad
readings dead-lettered, the valid ones of each request accepted and landed."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from typing import Any

import httpx

from ot_tools import drills
from ot_tools.drill.harness import Drill, DrillOptions, combine, now
from streaming.api.keys import Role, new_key
from streaming.events import decode_batch, encode_avro_many, encode_json
from streaming.settings import Settings

ODD_IDS = (
    "m'; DROP TABLE readings;--",
    "m001 OR 1=1",
    "m\u202eevil",  # right-to-left override
    "m\U0001f600",
    "m\x00nul",
    "M001",  # upper case: not the contract's form
    "m" + "x" * 80,  # too long
    "ｍ００１",  # fullwidth
)
KINDS = (
    "random_bytes",
    "truncated_avro",
    "wrong_magic_byte",
    "nan",
    "infinity",
    "negative_infinity",
    "wrong_json_types",
    "sql_like_machine_id",
    "odd_unicode_machine_id",
    "empty",
    "json_garbage",
    "out_of_range",
)


def hostile(n: int, seed: int = 17, big_every: int = 5_000) -> list[tuple[str, bytes, bytes]]:
    """`n` hostile payloads as (kind, key, value), every kind in turn; one of every `big_every`
    is a 1 MiB message of random bytes. Encoded in a few batch calls (100,000 in seconds)."""
    rng = random.Random(seed)
    base = drills.reading_records(max(n, 1), machines=40, seed=seed)
    whole = encode_avro_many(base)
    numeric = {
        "nan": float("nan"),
        "infinity": float("inf"),
        "negative_infinity": float("-inf"),
        "out_of_range": 1e300,
    }
    out: list[tuple[str, bytes, bytes]] = []
    spoilt: list[tuple[int, dict[str, Any]]] = []  # Avro records to encode in one call
    for i in range(n):
        record = base[i]
        key = record["machine_id"].encode()
        if big_every and i % big_every == big_every - 1:
            out.append(("one_mib", key, rng.randbytes(2**20)))
            continue
        kind = KINDS[i % len(KINDS)]
        value = b""
        if kind == "random_bytes":
            value = rng.randbytes(rng.randint(1, 300))
        elif kind == "truncated_avro":
            value = whole[i][: rng.randint(1, len(whole[i]) - 1)]
        elif kind == "wrong_magic_byte":
            value = bytes([rng.choice([0x01, 0x7F, 0xFF, 0x02])]) + whole[i][1:]
        elif kind in numeric:
            spoilt.append((len(out), {**record, "value": numeric[kind]}))
        elif kind == "wrong_json_types":
            value = json.dumps(
                {**record, "value": "hot", "seq": "one", "ts": [record["ts"]], "machine_id": 7}
            ).encode()
        elif kind in ("sql_like_machine_id", "odd_unicode_machine_id"):
            odd = ODD_IDS[(i // len(KINDS)) % len(ODD_IDS)]
            key = odd.encode("utf-8", "surrogatepass")
            odd_record = {**record, "machine_id": odd, "event_id": f"{odd}:{record['seq']}"}
            if i % 2:
                value = json.dumps(odd_record, ensure_ascii=False).encode()
            else:
                spoilt.append((len(out), odd_record))
        elif kind == "json_garbage":
            value = rng.choice(
                [b"{", b"[]", b"null", b'{"machine_id": {"$ne": null}}', b"\xff\xfe"]
            )
        out.append((kind, key, value))
    try:
        encoded = encode_avro_many([r for _, r in spoilt])
    except Exception:  # the encoder refuses one of them: send them as JSON then
        encoded = [json.dumps(r, ensure_ascii=False).encode() for _, r in spoilt]
    for (at, _), value in zip(spoilt, encoded, strict=True):
        kind, key, _ = out[at]
        out[at] = (kind, key, value)
    return out


def expected_valid(settings: Settings, values: list[bytes]) -> int:
    """What the contract itself says: how many of these payloads are valid readings now."""
    decoded = decode_batch(
        values,
        int(time.time() * 1000),
        max_future_ms=int(settings.max_future_seconds * 1000),
        max_age_ms=int(settings.max_event_age_hours * 3_600_000),
    )
    return int(decoded.valid.num_rows)


def run(options: DrillOptions) -> dict[str, Any]:
    """Hostile payloads mixed with valid readings: every bad one dead-lettered with its reason,
    every valid one landed and counted, zero crashes."""
    n = 10_000 if options.quick else 100_000
    with Drill("hostile-input", options) as d:
        bad = hostile(n)
        good = drills.readings(n, machines=40, seed=3)
        mixed: list[tuple[bytes, bytes]] = []
        for (_, key, value), pair in zip(bad, good, strict=True):
            mixed += [pair, (key, value)]
        valid = expected_valid(d.settings, [v for _, v in mixed])
        d.load = {
            "source": "hostile payloads 1:1 with valid readings (ot_tools.drill.hostile_input)",
            "hostile": n,
            "valid_readings": n,
            "kinds": dict(Counter(kind for kind, _, _ in bad)),
            "valid_by_contract": valid,
        }
        d.say(f"producing {len(mixed):,} messages ({n:,} hostile)")
        started = now()
        drills.produce(d.settings, d.settings.topics.readings, mixed)
        d.load["produce_s"] = round(now() - started, 1)
        common = ["--progress-every", "1"]
        d.child("lander", "land", ["--group", "lander", "--flush-age", "1", *common])
        d.child("state", "state", ["--group", "state", *common])
        d.monitor_lag("lander", "state")
        at = now()
        caught_up = d.wait_caught_up(timeout=300)
        d.check("consumed everything", caught_up is not None)
        d.figures["drain_s"] = None if caught_up is None else round(caught_up - at, 1)
        for name in ("lander", "state"):
            d.check(f"{name}: zero crashes", not d.children[name].exits, d.children[name].exits)
        d.stop_consumers("lander", "state")
        reconciled = d.reconcile(state_group="state")
        lake = reconciled["lakes"]["lake"]
        letters = drills.dead_letters(d.settings)
        reasons = Counter(letter.reason for letter in letters)
        d.figures["dead_letter_reasons"] = dict(reasons.most_common())
        d.figures["dead_letters_truncated"] = sum(letter.truncated for letter in letters)
        d.check("every valid reading landed", lake["landed"] == valid, [lake["landed"], valid])
        d.check(
            "every hostile payload dead-lettered",
            lake["dead_lettered"] == len(mixed) - valid,
            [lake["dead_lettered"], len(mixed) - valid],
        )
        d.check("every dead letter says why", all(letter.reason for letter in letters))
        d.check("hostile payloads are most of the dead letters", len(mixed) - valid >= n * 0.99)
        webhook = _webhook(d, 300 if options.quick else 3_000)
        return d.report(combine({"kafka": reconciled, "webhook": webhook}))


def _bodies(n: int, seed: int = 5) -> list[tuple[str, str, bytes, int]]:
    """(kind, content type, body, valid readings in it) for `n` webhook requests."""
    rng = random.Random(seed)
    records = drills.reading_records(n * 3, machines=30, seed=seed)
    bad = [(k, v) for k, _, v in hostile(n * 2, seed=seed, big_every=0)]
    out: list[tuple[str, str, bytes, int]] = []
    js = "application/json"
    for i in range(n):
        good = records[3 * i : 3 * i + 3]
        kind, value = bad[i]
        choice = i % 8
        if choice == 0:
            out.append(("valid", js, encode_json(good[0]), 1))
        elif choice == 1:  # a batch: valid readings and a hostile one among them
            spoilt = {**good[2], "value": "NaN", "machine_id": ODD_IDS[i % len(ODD_IDS)]}
            body = json.dumps([good[0], good[1], spoilt], ensure_ascii=False).encode()
            out.append(("mixed_batch", js, body, 2))
        elif choice == 2:
            out.append((f"raw_{kind}", js, value, 0))  # the Kafka payloads, as a body
        elif choice == 3:
            odd = ODD_IDS[i % len(ODD_IDS)]
            record = {**good[0], "machine_id": odd, "event_id": f"{odd}:{good[0]['seq']}"}
            out.append(("odd_machine_id", js, json.dumps(record).encode(), 0))
        elif choice == 4:
            record = {**good[0], "value": [1, 2], "ts": "yesterday", "quality": None}
            out.append(("wrong_json_types", js, json.dumps(record).encode(), 0))
        elif choice == 5:
            text = json.dumps({**good[0], "value": float("nan")})  # JSON with a bare NaN
            out.append(("nan_literal", js, text.encode(), 0))
        elif choice == 6:
            whole = encode_json(good[0])
            out.append(("truncated_json", js, whole[: rng.randint(1, len(whole) - 1)], 0))
        else:
            out.append(("random_bytes", "application/x-ndjson", rng.randbytes(200), 0))
    out.append(("too_large", js, b"[" + b" " * (5 * 2**20) + b"]", 0))
    return out


def _webhook(d: Drill, n: int) -> dict[str, Any]:
    """Hostile requests into `ot api` on a topic set of their own, with a lander behind it."""
    settings = d.isolate("webhook")
    secret, entry = new_key("drill", Role.INGEST)
    port = d.options.port_base + 301
    d.child(
        "api", "api", ["--port", str(port)], settings=settings, env={"OT_API_KEYS": entry.entry}
    )
    d.child("web-lander", "land", ["--group", "lander", "--flush-age", "1"], settings=settings)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    d.wait_for("ot api answers", lambda: _health(client), 60)
    statuses: Counter[str] = Counter()
    accepted = rejected = expected = 0
    problems_ok = True
    for kind, ctype, body, valid in _bodies(n):
        r = client.post(
            "/webhook/sensor-data",
            content=body,
            headers={"X-API-Key": secret, "Content-Type": ctype},
        )
        statuses[f"{kind} {r.status_code}"] += 1
        expected += valid
        if r.status_code == 202:
            answer = r.json()
            accepted += answer["accepted"]
            rejected += len(answer["rejected"])
        else:
            problem = r.headers.get("content-type", "").startswith("application/problem+json")
            problems_ok = problems_ok and problem and 400 <= r.status_code < 500
            if r.status_code == 422:
                rejected += len(r.json().get("rejected", []))
    client.close()
    d.say(f"webhook: {sum(statuses.values())} requests, {accepted} readings accepted")
    d.monitor_lag("lander", settings=settings)
    d.check("webhook: landed", d.wait_caught_up(timeout=120) is not None)
    d.check("webhook: every error a 4xx problem+json, no 5xx", problems_ok, dict(statuses))
    d.check("webhook: the valid readings accepted", accepted == expected, [accepted, expected])
    d.check("webhook: api and lander never crashed", not d.children["api"].exits)
    d.stop_consumers("web-lander", "api")
    out = d.reconcile(settings=settings, label="webhook: ")
    letters = [x for x in drills.dead_letters(settings) if x.stage == "gateway"]
    d.check(
        "webhook: every rejected reading dead-lettered",
        len(letters) >= rejected > 0,
        [len(letters), rejected],
    )
    d.check("webhook: every accepted reading landed", out["lakes"]["lake"]["landed"] == accepted)
    d.figures["webhook"] = {
        "requests": sum(statuses.values()),
        "answers": dict(sorted(statuses.items())),
        "accepted": accepted,
        "rejected_readings": rejected,
        "dead_lettered_by_gateway": len(letters),
    }
    return out


def _health(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.HTTPError:
        return False
