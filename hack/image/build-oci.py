#!/usr/bin/env python3
"""Writes an OCI image archive (an OCI image layout in a tar) without Docker or a registry.

    build-oci.py --out FILE --name REF [--file SRC:DEST[:MODE]]... [--dir DEST]...
                 [--user UID:GID] [--entrypoint JSON] [--cmd JSON] [--port N/tcp]...

One layer holding the given files (owned by root, mtime 0, so the same inputs give the same
digests), a config with User/Entrypoint/Cmd/ExposedPorts, a manifest and an index naming the
image REF (both as `io.containerd.image.name` and `org.opencontainers.image.ref.name`), the
layout `ctr images import` reads. Python standard library only.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile


def blob(blobs, data, media_type):
    """Adds data to the blobs dict; returns its descriptor."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def layer_tar(files, dirs):
    """The uncompressed layer: parent directories, then each file, in a fixed order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        wanted = set()
        for dest in [d for d in dirs] + [os.path.dirname(f[1]) for f in files]:
            parts = dest.strip("/").split("/")
            for i in range(1, len(parts) + 1):
                if parts[0]:
                    wanted.add("/".join(parts[:i]))
        for d in sorted(wanted):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = 0
            tar.addfile(info)
        for src, dest, mode in sorted(files, key=lambda f: f[1]):
            with open(src, "rb") as f:
                data = f.read()
            info = tarfile.TarInfo(dest.lstrip("/"))
            info.size = len(data)
            info.mode = mode
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--name", required=True, help="image reference, e.g. docker.io/library/x:1")
    p.add_argument("--file", action="append", default=[], help="SRC:DEST[:OCTAL_MODE]")
    p.add_argument("--dir", action="append", default=[], help="an empty directory DEST")
    p.add_argument("--user", default="")
    p.add_argument("--entrypoint", default="null", help="JSON list")
    p.add_argument("--cmd", default="null", help="JSON list")
    p.add_argument("--port", action="append", default=[], help="exposed port, e.g. 8080/tcp")
    args = p.parse_args()

    files = []
    for spec in args.file:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            p.error(f"--file {spec}: want SRC:DEST[:MODE]")
        mode = int(parts[2], 8) if len(parts) == 3 else 0o644
        files.append((parts[0], parts[1], mode))

    raw = layer_tar(files, args.dir)
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    compressed = gzip.compress(raw, compresslevel=6, mtime=0)

    blobs = {}
    layer = blob(blobs, compressed, "application/vnd.oci.image.layer.v1.tar+gzip")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {k: v for k, v in {
            "User": args.user or None,
            "Entrypoint": json.loads(args.entrypoint),
            "Cmd": json.loads(args.cmd),
            "ExposedPorts": {port: {} for port in args.port} or None,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
        }.items() if v is not None},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "hack/image/build-oci.py"}],
    }
    config_desc = blob(blobs, json.dumps(config, sort_keys=True).encode(),
                       "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer],
    }
    manifest_desc = blob(blobs, json.dumps(manifest, sort_keys=True).encode(),
                         "application/vnd.oci.image.manifest.v1+json")
    manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}
    manifest_desc["annotations"] = {
        "io.containerd.image.name": args.name,
        "org.opencontainers.image.ref.name": args.name.rsplit(":", 1)[-1],
    }
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [manifest_desc]}

    tmp = args.out + ".tmp"
    with tarfile.open(tmp, "w") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add("index.json", json.dumps(index, sort_keys=True).encode())
        for digest in sorted(blobs):
            add(f"blobs/sha256/{digest.split(':', 1)[1]}", blobs[digest])
    os.replace(tmp, args.out)
    print(f"{args.out}: {args.name} {manifest_desc['digest']}")


if __name__ == "__main__":
    main()
