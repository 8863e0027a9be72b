#!/usr/bin/env python3
"""Revocation lag between two siesta replicas that share one database and one Redis.

Each trial: create a key through replica A (POST /api/v1/ApiKey), use it once on replica B
(GET /api/v1/Me, 200, so B has it in its key cache), delete it through A
(DELETE /api/v1/ApiKey/{id}, 204), then ask B with the key, request after request on one
keep-alive connection, until B answers 401 invalid_api_key. The lag is the time from the
DELETE's response to the first 401 from B: an upper bound, at most one round trip to B
above the true figure (the poll round trip is reported too).

    python3 bench/revocation_lag.py --replica-a URL --replica-b URL \\
        --admin-headers FILE [--trials 30] [--json]

The admin credentials (a key of scope admin, and its organization) come from a
curl-style header file (`X-Api-Key: ...` and `X-Org-Id: ...` lines, as bench/run.sh
writes them), or from the environment: SIESTA_BENCH_ADMIN_KEY and SIESTA_BENCH_ORG (or
--org). They are never taken from the command line and never printed, nor are the keys
the trials create. Standard library only.
"""

import argparse
import http.client
import json
import os
import secrets
import statistics
import sys
import time
import urllib.parse


class Failure(Exception):
    pass


class Replica:
    """One keep-alive HTTP connection to a replica, reopened if the server closes it."""

    def __init__(self, name, base):
        url = urllib.parse.urlsplit(base)
        if url.scheme != "http" or not url.hostname:
            raise Failure(f"replica {name}: expected an http://HOST:PORT base URL")
        self.name = name
        self.host = url.hostname
        self.port = url.port or 80
        self.prefix = url.path.rstrip("/")
        self.conn = None

    def request(self, method, path, headers, body=None):
        """Returns (status, parsed JSON body or None)."""
        headers = dict(headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                self.conn.request(method, self.prefix + path, body=data, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError) as e:
                # A keep-alive connection the server closed between two requests: once more
                # on a fresh one.
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise Failure(f"{method} on replica {self.name}: {type(e).__name__}")
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        if response.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        return response.status, parsed

    def close(self):
        if self.conn is not None:
            self.conn.close()


def code_of(body):
    return body.get("code") if isinstance(body, dict) else None


def read_headers_file(path):
    found = {}
    with open(path) as f:
        for line in f:
            name, sep, value = line.partition(":")
            if sep:
                found[name.strip().lower()] = value.strip()
    return found.get("x-api-key"), found.get("x-org-id")


def trial(a, b, admin, org, number, run_id, poll_timeout):
    name = f"bench-lag-{run_id}-{number}"
    # A limit of its own well above what the polling sends, so B never answers 429.
    status, body = a.request(
        "POST", "/api/v1/ApiKey", admin, {"name": name, "rateLimit": 1000000000}
    )
    if status != 201 or not isinstance(body, dict) or "key" not in body or "id" not in body:
        raise Failure(f"POST /api/v1/ApiKey on A answered {status} {code_of(body) or ''}".rstrip())
    key_id = body["id"]
    user = {"X-Api-Key": body["key"], "X-Org-Id": org}
    del body

    status, body = b.request("GET", "/api/v1/Me", user)
    if status != 200:
        raise Failure(f"trial {number}: the new key on B answered {status} {code_of(body) or ''}".rstrip())

    status, body = a.request("DELETE", f"/api/v1/ApiKey/{urllib.parse.quote(key_id)}", admin)
    deleted = time.perf_counter()
    if status != 204:
        raise Failure(f"trial {number}: DELETE /api/v1/ApiKey/{{id}} on A answered {status}")

    polls = 0
    rtts = []
    while True:
        sent = time.perf_counter()
        status, body = b.request("GET", "/api/v1/Me", user)
        now = time.perf_counter()
        polls += 1
        rtts.append(now - sent)
        if status == 401:
            if code_of(body) != "invalid_api_key":
                raise Failure(f"trial {number}: B answered 401 {code_of(body)}, expected invalid_api_key")
            return {"lag": now - deleted, "sent_after": sent - deleted, "polls": polls, "rtts": rtts}
        if status != 200:
            raise Failure(f"trial {number}: B answered {status} {code_of(body) or ''} while polling".rstrip())
        if now - deleted > poll_timeout:
            raise Failure(
                f"trial {number}: B still accepted the deleted key {poll_timeout:.0f} s after the DELETE"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replica-a", required=True, help="base URL of replica A (create, delete)")
    parser.add_argument("--replica-b", required=True, help="base URL of replica B (polled)")
    parser.add_argument("--admin-headers", help="file with X-Api-Key and X-Org-Id lines (admin key)")
    parser.add_argument("--org", help="organization id (else SIESTA_BENCH_ORG or the headers file)")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between trials")
    parser.add_argument("--poll-timeout", type=float, default=10.0, help="seconds before a trial fails")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    key, org = None, None
    if args.admin_headers:
        key, org = read_headers_file(args.admin_headers)
    key = key or os.environ.get("SIESTA_BENCH_ADMIN_KEY")
    org = args.org or org or os.environ.get("SIESTA_BENCH_ORG")
    if not key or not org:
        parser.error("need an admin key and its organization: --admin-headers FILE, or "
                     "SIESTA_BENCH_ADMIN_KEY and SIESTA_BENCH_ORG / --org")
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    admin = {"X-Api-Key": key, "X-Org-Id": org}

    a = Replica("A", args.replica_a)
    b = Replica("B", args.replica_b)
    run_id = secrets.token_hex(4)
    results = []
    try:
        for number in range(1, args.trials + 1):
            results.append(trial(a, b, admin, org, number, run_id, args.poll_timeout))
            time.sleep(args.pause)
    except Failure as e:
        print(f"revocation_lag: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"revocation_lag: {type(e).__name__}: {e.strerror or e}", file=sys.stderr)
        return 1
    finally:
        a.close()
        b.close()

    ms = [r["lag"] * 1000 for r in results]
    rtts = [t * 1000 for r in results for t in r["rtts"]]
    summary = {
        "trials": len(ms),
        "median_ms": statistics.median(ms),
        "max_ms": max(ms),
        "min_ms": min(ms),
        "mean_ms": statistics.fmean(ms),
        "polls_median": statistics.median(r["polls"] for r in results),
        "first_poll_refused": sum(1 for r in results if r["polls"] == 1),
        "poll_rtt_median_ms": statistics.median(rtts),
        "lags_ms": [round(x, 3) for x in ms],
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"revocation lag over {summary['trials']} trials (DELETE on A answered -> first 401 on B):")
        print(f"  median {summary['median_ms']:.2f} ms, max {summary['max_ms']:.2f} ms,"
              f" min {summary['min_ms']:.2f} ms, mean {summary['mean_ms']:.2f} ms")
        print(f"  polls of B per trial (median) {summary['polls_median']:g};"
              f" poll round trip (median) {summary['poll_rtt_median_ms']:.2f} ms")
        print(f"  B refused the key at the first request after the DELETE in"
              f" {summary['first_poll_refused']} of {summary['trials']} trials")
    return 0


if __name__ == "__main__":
    sys.exit(main())
