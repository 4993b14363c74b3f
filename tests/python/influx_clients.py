"""Writes to energyd with InfluxData's official Python clients, as their users do.

Usage: influx_clients.py URL TOKEN HOUR_S

  URL     energyd's base URL (http://127.0.0.1:PORT)
  TOKEN   an ingest token (v2 client: `Authorization: Token`; v1 client: Basic auth password)
  HOUR_S  a whole hour (Unix seconds) within the daemon's time window; the points go into it

Clients: `influxdb-client` (InfluxDB 2 API: /ping, /health, /api/v2/write) and `influxdb`
(InfluxDB 1.x API: /ping, /query, /write). Each writes Point objects and raw lines at every
precision it has, in batches and gzipped, with tags whose values hold backslashes, spaces,
commas and equals signs. Prints one JSON object per line: {"expect": [meter, quantity, ms,
value]} for every point written, and {"check": name, ...} for every start-up call. Exits non-zero
on any client error.
"""

import json
import sys

from influxdb import InfluxDBClient as V1Client
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS, WriteOptions

url, token, hour_s = sys.argv[1], sys.argv[2], int(sys.argv[3])
HOUR_MS = hour_s * 1000
# Tag values with every character line protocol escapes, and backslashes before them.
ODD_TAGS = {"path": "C:\\temp\\ x", "site": "Bldg A, east=1", "note": "back\\slash"}


def out(obj):
    print(json.dumps(obj), flush=True)


def expect(meter, quantity, ms, value):
    out({"expect": [meter, quantity, ms, value]})


# Per precision: its unit in ms as a fraction (value, divisor), and the minute of HOUR_S its
# points go to, so that no two points share a millisecond.
UNITS = {"h": (3_600_000, 1), "m": (60_000, 1), "s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 1_000_000)}
MINUTE = {"h": 0, "m": 5, "s": 10, "ms": 15, "us": 20, "ns": 25}


def stamp(precision, offset_ms, extra=0):
    """A timestamp at `precision` for HOUR_MS + minute(precision) + offset_ms, plus `extra`
    units below the millisecond (cut off by the store); returns (timestamp, ms)."""
    mul, div = UNITS[precision]
    ms = HOUR_MS + MINUTE[precision] * 60_000 + offset_ms
    assert ms % mul == 0
    return ms // mul * div + extra, ms


# ---- v2: influxdb-client -------------------------------------------------------------------
v2 = InfluxDBClient(url=url, token=token, org="energy", enable_gzip=True)
assert v2.ping(), "v2 ping() failed"
out({"check": "v2 ping", "version": v2.version(), "build": v2.build()})
health = v2.health()
assert health.status == "pass", health
out({"check": "v2 health", "status": health.status, "name": health.name})

sync = v2.write_api(write_options=SYNCHRONOUS)
V2_PRECISIONS = {"ns": WritePrecision.NS, "us": WritePrecision.US, "ms": WritePrecision.MS, "s": WritePrecision.S}
values = [0.1 + 0.2, -1.5e-7, 1234567.891, 42]
for p, wp in V2_PRECISIONS.items():
    # 999 µs or 999 ns past the millisecond: the store keeps the millisecond.
    extra = 999 if p in ("us", "ns") else 0
    # Point objects.
    for i, v in enumerate(values):
        ts, ms = stamp(p, i * 1000, extra)
        point = Point("energy meter").tag("meter", "py-v2").field("active_power", v).time(ts, wp)
        for k, tv in ODD_TAGS.items():
            point = point.tag(k, tv)
        sync.write(bucket="energy", record=point, write_precision=wp)
        expect("py-v2", "active_power", ms, float(v))
    # Raw lines, several in one request; an integer and an unsigned field.
    lines = []
    for i in range(3):
        ts, ms = stamp(p, 30_000 + i * 1000)
        lines.append(f"energy,meter=py-v2,path=C:\\temp\\\\ x water_volume={1000 + i}i,reactive_power={7 + i}u {ts}")
        expect("py-v2", "water_volume", ms, float(1000 + i))
        expect("py-v2", "reactive_power", ms, float(7 + i))
    sync.write(bucket="energy", record="\n".join(lines), write_precision=wp)

# Batching: 250 points in batches of 100, flushed on close.
errors = []
batching = v2.write_api(
    write_options=WriteOptions(batch_size=100, flush_interval=200, max_retries=0),
    error_callback=lambda conf, data, exc: errors.append(repr(exc)),
)
for i in range(250):
    ms = HOUR_MS + 40 * 60_000 + i * 1000
    batching.write(bucket="energy", record=Point("energy").tag("meter", "py-v2").field("active_energy_import", 5000.0 + i * 0.25).time(ms, WritePrecision.MS))
    expect("py-v2", "active_energy_import", ms, 5000.0 + i * 0.25)
batching.close()
assert not errors, errors
v2.close()

# ---- v1: influxdb ----------------------------------------------------------------------------
host, port = url.split("://")[1].split(":")
v1 = V1Client(host=host, port=int(port), username="telegraf", password=token, database="energy", gzip=True)
out({"check": "v1 ping", "version": v1.ping()})
v1.create_database("energy")
out({"check": "v1 create_database"})
out({"check": "v1 get_list_database", "databases": v1.get_list_database()})

V1_PRECISIONS = {"n": "ns", "u": "us", "ms": "ms", "s": "s", "m": "m", "h": "h"}
for p1, p in V1_PRECISIONS.items():
    body = []
    # One point per unit of the precision (an hour has room for one whole hour only).
    step = {"h": 0, "m": 60_000}.get(p, 1000)
    for i, v in enumerate([3.25, -0.001, 98765.4321][: 1 if p == "h" else 3]):
        ts, ms = stamp(p, i * step)
        tags = dict(ODD_TAGS, meter="py-v1")
        body.append({"measurement": "energy", "tags": tags, "time": ts, "fields": {"active_power": v}})
        expect("py-v1", "active_power", ms, v)
    assert v1.write_points(body, time_precision=p1, batch_size=2)
    # Raw lines.
    ts, ms = stamp(p, 0)
    assert v1.write_points([f"energy,meter=py-v1,site=Bldg\\ A water_volume=77.5 {ts}"], time_precision=p1, protocol="line")
    expect("py-v1", "water_volume", ms, 77.5)
v1.close()
out({"check": "done"})
