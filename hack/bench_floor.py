#!/usr/bin/env python3
"""The API server's own cost of each request secret-relay makes per ExternalSecret (issue 14).

    hack/bench-floor.sh [COUNT]

Run by hack/bench-floor.sh inside a fresh test environment (hack/testenv/testenv.py: etcd and
kube-apiserver on loopback; KUBECONFIG from it). For each request type it sends COUNT requests
(default 2,000; 16 in flight, as the benchmark's clients) and reads the CPU time (utime + stime
of /proc/PID/stat) that kube-apiserver and etcd spent on them: the floor under any operator's
initial sync on this machine, whatever the operator does. Writes BENCHMARKS-floor.json and
BENCHMARKS-floor.md at the repo root (SECRET_RELAY_BENCH_OUT elsewhere).

Request types, each shaped as the operator sends it:
  - the raw reference (POST a plain Secret), as hack/bench.sh's raw create;
  - GET of a Secret that does not exist (404);
  - server-side apply creating a Secret (our labels, annotations, owner reference);
  - POST of the same Secret (a create without apply);
  - POST of an events.k8s.io/v1 Event;
  - PATCH of an ExternalSecret's status (JSON merge patch, the status the operator writes);
  - PUT of an ExternalSecret's status (the whole object, resourceVersion as precondition);
  - the same status PATCH again, changing nothing.
With SECRET_RELAY_BENCH_PPROF_SECS=N (issue 28; hack/bench-floor.sh then starts the API
server with --profiling, SECRET_RELAY_TESTENV_PROFILING=1), kube-apiserver's CPU profile
(/debug/pprof/profile, N seconds) is taken while it serves status merge PATCHes, and for
comparison while it serves the raw Secret POSTs; each profile is kept in target/bench/ and its
top functions (`go tool pprof -top`, the Go toolchain on PATH) go into BENCHMARKS-floor.md.
Only the Python standard library is used.
"""

import base64
import collections
import concurrent.futures
import datetime
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_FLIGHT = 16


def kubeconfig():
    """(host, port, ssl context) from $KUBECONFIG (the test environment's admin kubeconfig)."""
    with open(os.environ["KUBECONFIG"]) as f:
        text = f.read()
    try:
        kc = json.loads(text)
    except json.JSONDecodeError:
        import yaml  # noqa: PLC0415 (only when the kubeconfig is YAML)

        kc = yaml.safe_load(text)
    cluster = kc["clusters"][0]["cluster"]
    user = kc["users"][0]["user"]
    tmp = tempfile.mkdtemp(prefix="bench-floor-")

    def material(key):
        if key + "-data" in user:
            path = os.path.join(tmp, key)
            with open(path, "wb") as f:
                f.write(base64.b64decode(user[key + "-data"]))
            return path
        return user[key]

    ctx = ssl.create_default_context()
    # The API server's serving certificate is checked by every test; this script measures it.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(material("client-certificate"), material("client-key"))
    url = urllib.parse.urlparse(cluster["server"])
    return url.hostname, url.port, ctx


HOST, PORT, CTX = kubeconfig()
LOCAL = threading.local()


def request(method, path, body=None, content_type="application/json"):
    """One request on this thread's kept-alive connection; returns (status, parsed body)."""
    conn = getattr(LOCAL, "conn", None)
    if conn is None:
        conn = LOCAL.conn = http.client.HTTPSConnection(HOST, PORT, context=CTX, timeout=60)
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    headers = {"Content-Type": content_type, "Accept": "application/json"}
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    except (http.client.HTTPException, OSError):
        LOCAL.conn = None
        raise
    return resp.status, (json.loads(raw) if raw else None)


def raw_get(path, timeout):
    """GET on a connection of its own; the body as bytes (for binary answers)."""
    conn = http.client.HTTPSConnection(HOST, PORT, context=CTX, timeout=timeout)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200, (resp.status, body[:200])
    return body


def profiled(label, secs, fn, pids, out_dir):
    """kube-apiserver's CPU profile over `secs` seconds while fn(i) runs for i = 0, 1, ...
    (IN_FLIGHT at a time) until the profile is taken; saves it and returns `go tool pprof -top`
    of it (flat and cumulative, 25 lines each)."""
    result = {}
    taker = threading.Thread(target=lambda: result.update(
        body=raw_get(f"/debug/pprof/profile?seconds={secs}", secs + 60)))
    taker.start()
    counter = iter(range(10**9))
    lock = threading.Lock()

    def loop():
        while taker.is_alive():
            with lock:
                i = next(counter)
            fn(i)

    with concurrent.futures.ThreadPoolExecutor(IN_FLIGHT) as pool:
        for f in [pool.submit(loop) for _ in range(IN_FLIGHT)]:
            f.result()
    taker.join()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "apiserver-" + label.lower().replace(" ", "-") + ".pprof")
    with open(path, "wb") as f:
        f.write(result["body"])
    tops = []
    for extra in ([], ["-cum"]):
        tops.append(subprocess.run(["go", "tool", "pprof", "-top", "-nodecount=25", *extra, path],
                                   check=True, capture_output=True, text=True).stdout)
    every = subprocess.run(["go", "tool", "pprof", "-top", "-cum", "-nodecount=2000", path],
                           check=True, capture_output=True, text=True).stdout
    shares = {}
    for what, function in PROFILE_PARTS:
        for line in every.splitlines():
            if line.rstrip().endswith(function):
                shares[what] = line.split()[4]
                break
    print(f"profile of {label}: {path}", flush=True)
    return path, tops, shares


# Where a write's CPU goes, by the cumulative share of one function each (as `go tool pprof`
# names it): reported for each profile.
PROFILE_PARTS = [
    ("the stored object decoded (etcd3 updateState)",
     "k8s.io/apiserver/pkg/storage/etcd3.(*store).updateState"),
    ("the patch applied to the current object",
     "k8s.io/apiserver/pkg/endpoints/handlers.(*jsonPatcher).applyPatchToCurrentObject"),
    ("the custom resource's schema coercion (JSON decode)",
     "k8s.io/apiextensions-apiserver/pkg/apiserver.schemaCoercingDecoder.Decode"),
    ("status validation (schema and CEL rules)",
     "k8s.io/apiextensions-apiserver/pkg/registry/customresource.statusStrategy.ValidateUpdate"),
    ("managed fields", "k8s.io/apimachinery/pkg/util/managedfields/internal.(*FieldManager).Update"),
    ("admission", "k8s.io/apiserver/pkg/endpoints/handlers.(*patcher).applyAdmission"),
    ("Go's garbage collector (background marking)", "runtime.gcBgMarkWorker"),
]


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def pid_where(what, test):
    """The process whose command line passes test (other test environments may be running)."""
    for p in os.listdir("/proc"):
        if p.isdigit() and test(cmdline(p)):
            return int(p)
    raise SystemExit(f"bench_floor: no {what} process (run it in the test environment)")


def servers():
    """kube-apiserver serving $KUBECONFIG's port, and the etcd it uses."""
    api = pid_where("kube-apiserver", lambda c: c and c[0].endswith("kube-apiserver")
                    and f"--secure-port={PORT}" in c)
    etcd_url = next(a.split("=", 1)[1] for a in cmdline(api) if a.startswith("--etcd-servers="))
    etcd = pid_where("etcd", lambda c: c and c[0].endswith("etcd")
                     and f"--listen-client-urls={etcd_url}" in c)
    return {"apiserver": api, "etcd": etcd}


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def measure(label, count, fn, pids):
    """Runs fn(i) for i < count, IN_FLIGHT at a time; the CPU each server spent per request."""
    before = {name: cpu_secs(pid) for name, pid in pids.items()}
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(IN_FLIGHT) as pool:
        codes = collections.Counter(pool.map(fn, range(count)))
    secs = time.monotonic() - started
    after = {name: cpu_secs(pid) for name, pid in pids.items()}
    row = {
        "request": label,
        "count": count,
        "per_sec": round(count / secs, 1),
        "answers": {str(k): v for k, v in sorted(codes.items())},
    }
    for name in pids:
        row[f"{name}_cpu_ms"] = round(1000 * (after[name] - before[name]) / count, 3)
    print(json.dumps(row), flush=True)
    return row


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    binary = os.environ.get("SECRET_RELAY_BENCH_BIN", os.path.join(ROOT, "target/release/secret-relay"))
    crds = subprocess.run([binary, "crd"], check=True, capture_output=True, text=True).stdout
    import yaml  # noqa: PLC0415 (PyYAML comes with the test environment's moto)

    for doc in yaml.safe_load_all(crds):
        if doc:
            status, body = request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", doc)
            assert status in (201, 409), (status, body)
    group = "/apis/secret-relay.dev/v1alpha1"
    for _ in range(60):
        if request("GET", f"{group}/externalsecrets")[0] == 200:
            break
        time.sleep(1)
    ns = "floor-" + uuid.uuid4().hex[:6]
    assert request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})[0] == 201
    pids = servers()
    es_path = f"{group}/namespaces/{ns}/externalsecrets"
    secrets = f"/api/v1/namespaces/{ns}/secrets"
    value = base64.b64encode(b"value-000000012").decode()
    uids, objects = {}, {}

    def create_es(i):
        status, body = request("POST", es_path, {
            "apiVersion": "secret-relay.dev/v1alpha1", "kind": "ExternalSecret",
            "metadata": {"name": f"es-{i}"},
            "spec": {"refreshInterval": "60s",
                     "secretStoreRef": {"name": "vault", "kind": "SecretStore"},
                     "target": {"name": f"s-{i}"},
                     "data": [{"secretKey": "value",
                               "remoteRef": {"key": f"bench/k{i % 100}", "property": "value"}}]},
        })
        uids[i] = body["metadata"]["uid"]
        return status

    def ours(i, name):
        return {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {"value": value},
            "metadata": {
                "name": name, "namespace": ns,
                "labels": {"app.kubernetes.io/managed-by": "secret-relay",
                           "secret-relay.dev/external-secret": f"es-{i}"},
                "annotations": {"secret-relay.dev/data-hash": "0" * 64,
                                "secret-relay.dev/store": "SecretStore/vault",
                                "secret-relay.dev/refresh-interval": "60s",
                                "secret-relay.dev/last-refresh": "2026-12-01T19:00:00Z"},
                "ownerReferences": [{"apiVersion": "secret-relay.dev/v1alpha1",
                                     "kind": "ExternalSecret", "name": f"es-{i}", "uid": uids[i],
                                     "controller": True, "blockOwnerDeletion": True}],
            },
        }

    def status(i, refreshed):
        return {
            "conditions": [{"type": "Ready", "status": "True", "reason": "SecretSynced",
                            "message": f"Secret s-{i} synced from SecretStore/vault",
                            "lastTransitionTime": "2026-12-01T19:00:00Z", "observedGeneration": 1}],
            "observedGeneration": 1, "refreshTime": refreshed,
            "syncedResourceVersion": "1-0123456789abcdef", "binding": {"name": f"s-{i}"},
        }

    def read_es(i):
        code, objects[i] = request("GET", f"{es_path}/es-{i}")
        return code

    def put_status(i):
        obj = objects[i]
        obj["status"] = status(i, "2026-12-01T19:00:30Z")
        return request("PUT", f"{es_path}/es-{i}/status?fieldManager=secret-relay", obj)[0]

    def patch_status(i):
        return request("PATCH", f"{es_path}/es-{i}/status?fieldManager=secret-relay",
                       {"status": status(i, "2026-12-01T19:00:00Z")},
                       "application/merge-patch+json")[0]

    def event(i):
        return request("POST", f"/apis/events.k8s.io/v1/namespaces/{ns}/events", {
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": f"es-{i}.{uuid.uuid4().hex[:16]}"},
            "eventTime": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": "secret-relay", "reportingInstance": "floor",
            "action": "Sync", "reason": "Created", "type": "Normal", "note": f"Secret s-{i} created",
            "regarding": {"apiVersion": "secret-relay.dev/v1alpha1", "kind": "ExternalSecret",
                          "name": f"es-{i}", "namespace": ns, "uid": uids[i]},
        })[0]

    rows = [
        measure("POST ExternalSecret (set-up)", count, create_es, pids),
        measure("POST Secret (the raw reference)", count, lambda i: request(
            "POST", secrets, {"metadata": {"name": f"raw-{i}"}, "data": {"value": value}})[0], pids),
        measure("GET Secret that does not exist (404)", count,
                lambda i: request("GET", f"{secrets}/s-{i}")[0], pids),
        measure("APPLY Secret, creating it (server-side apply)", count, lambda i: request(
            "PATCH", f"{secrets}/s-{i}?fieldManager=secret-relay&force=true",
            ours(i, f"s-{i}"), "application/apply-patch+yaml")[0], pids),
        measure("POST Secret with the operator's metadata", count,
                lambda i: request("POST", f"{secrets}?fieldManager=secret-relay", ours(i, f"p-{i}"))[0],
                pids),
        measure("POST events.k8s.io/v1 Event", count, event, pids),
        measure("PATCH ExternalSecret status (merge patch)", count, patch_status, pids),
        measure("PATCH ExternalSecret status, unchanged", count, patch_status, pids),
        measure("GET ExternalSecret", count, read_es, pids),
        measure("PUT ExternalSecret status (whole object)", count, put_status, pids),
    ]
    out = os.environ.get("SECRET_RELAY_BENCH_OUT", ROOT)
    profiles = []
    pprof_secs = int(os.environ.get("SECRET_RELAY_BENCH_PPROF_SECS", "0"))
    if pprof_secs:
        bench_dir = os.path.join(ROOT, "target", "bench")
        # Status PATCHes of the ExternalSecrets made above, each a change (a new refresh time).
        profiles.append(("status merge PATCH", *profiled(
            "status merge PATCH", pprof_secs, lambda i: patch_status(i % count), pids, bench_dir)))
        profiles.append(("Secret POST (raw)", *profiled(
            "Secret POST", pprof_secs, lambda i: request(
                "POST", secrets, {"metadata": {"name": f"prof-{i}"}, "data": {"value": value}})[0],
            pids, bench_dir)))
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "load_average_at_end": load,
        "in_flight": IN_FLIGHT,
        "rows": rows,
    }
    with open(os.path.join(out, "BENCHMARKS-floor.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    raw = rows[1]["apiserver_cpu_ms"] + rows[1]["etcd_cpu_ms"]
    lines = [
        "# The API server's cost per request",
        "",
        f"Made by `hack/bench-floor.sh` on {result['date']} ({result['cores']} cores; load average "
        f"at the end {load}). {count:,} requests of each type, {IN_FLIGHT} in flight, against a fresh "
        "test environment's kube-apiserver and etcd; CPU time of each server per request "
        "(/proc/PID/stat). Method: the docstring of `hack/bench_floor.py`.",
        "",
        "| request | per s | kube-apiserver CPU, ms | etcd CPU, ms | × the raw create | answers |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        both = r["apiserver_cpu_ms"] + r["etcd_cpu_ms"]
        answers = ", ".join(f"{k}: {v:,}" for k, v in r["answers"].items())
        lines.append(f"| {r['request']} | {r['per_sec']:,.0f} | {r['apiserver_cpu_ms']:.2f} | "
                     f"{r['etcd_cpu_ms']:.2f} | {both / raw:.2f} | {answers} |")
    lines.append("")
    for label, path, (flat, cum), shares in profiles:
        lines += [
            f"## kube-apiserver's CPU profile: {label}",
            "",
            "Share of the profile's CPU under each part (cumulative; parts overlap):",
            "",
            *[f"- {what}: {share}" for what, share in shares.items()],
            "",
            f"{pprof_secs} s of /debug/pprof/profile under that load (`{os.path.relpath(path, ROOT)}`; "
            "`go tool pprof -top`, by own time, then by cumulative time):",
            "",
            "```text",
            *[l for l in flat.splitlines() if l.strip()][-26:],
            "```",
            "",
            "```text",
            *[l for l in cum.splitlines() if l.strip()][-26:],
            "```",
            "",
        ]
    with open(os.path.join(out, "BENCHMARKS-floor.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
