#!/usr/bin/env python3
"""secret-relay's test environment: real servers on loopback, no Docker.

    testenv.py run [--dir DIR] [--keep] -- CMD ARGS...   start everything, run CMD, tear down
    testenv.py up  [--dir DIR] [--keep]                  start everything, wait for SIGINT/SIGTERM

    --node [--import OCI_ARCHIVE]...   also a node (node.py): containerd, kubelet, kube-scheduler,
                                       kube-controller-manager; the archives are imported into
                                       its containerd (as root only; see node.py)

Starts, on free 127.0.0.1 ports (with --node, on the node's host-only bridge address, which
Pods reach; see node.py):
  - etcd and kube-apiserver, as envtest runs them (generated CA and serving cert,
    service-account signing keys, client-certificate auth, RBAC), with an admin kubeconfig;
    skipped when SECRET_RELAY_EXISTING_KUBECONFIG names the kubeconfig of a cluster to use;
  - OpenBao (`bao server -dev`, root token "root"), also on a TLS listener (VAULT_TLS_ADDR,
    its CA in VAULT_TLS_CA_FILE);
  - moto's server (AWS SSM, KMS, STS, ...);
  - with --node, a node that runs Pods: kube-apiserver then also runs ServiceAccount admission,
    Node,RBAC authorization and a kubelet client certificate (`kubectl logs`/`exec` work).

Writes DIR/kubeconfig and DIR/env (KEY=VALUE lines, no quoting; SECRET_RELAY_TESTENV names
it), and gives CMD those variables plus PATH prefixed with DIR/bin (links to kubectl, helm,
sops, promtool, bao, etcd, kube-apiserver, moto_server). Exits with CMD's exit code (128+N when a
signal N stopped it).

Every process started here runs in its own process group; each group is sent SIGTERM, then
SIGKILL after a grace period, when CMD ends, when this script gets SIGINT/SIGTERM/SIGHUP and
when a start fails. The servers also get SIGTERM should this script die without cleaning up.

Python standard library only. Certificates are made by this same file run under the test
environment's virtualenv, whose python has the `cryptography` package (moto needs it).
"""

import argparse
import base64
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # node.py
GRACE_SECONDS = 5
SERVERS = ("etcd", "kube-apiserver", "bao", "moto")
CACHE_HINT = "$HOME/.cache/secret-relay"


def log(msg):
    print(f"testenv: {msg}", file=sys.stderr, flush=True)


class Failure(Exception):
    """A start step failed; the message names the step."""


class Interrupted(Exception):
    def __init__(self, signum):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


# --------------------------------------------------------------------------------------------
# Signals: the handler only records the signal; every wait below polls `pending_signal()`,
# so a signal never lands between starting a process and recording it.

_signals = []


def _on_signal(signum, _frame):
    _signals.append(signum)


def pending_signal():
    return _signals[0] if _signals else None


def check_signal():
    if _signals:
        raise Interrupted(_signals[0])


def sleep(seconds):
    end = time.monotonic() + seconds
    while True:
        check_signal()
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.1))


# --------------------------------------------------------------------------------------------
# Processes

_libc = None


def _child_setup():
    """Runs in the child between fork and exec: SIGTERM to the child should we die."""
    try:
        _libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort
        pass


class Proc:
    """A process in its own process group (start_new_session), with its log file."""

    def __init__(self, name, argv, env, log_path=None, cwd=None, stdout=None, deathsig=True,
                 stdin=subprocess.DEVNULL):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab") if log_path else None
        out = stdout if stdout is not None else self._log
        err = self._log if self._log else None
        global _libc
        if _libc is None:
            try:
                _libc = ctypes.CDLL(None, use_errno=True)
            except OSError:
                deathsig = False
        self.popen = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=stdin, stdout=out, stderr=err,
            start_new_session=True, preexec_fn=_child_setup if deathsig and _libc else None,
        )
        self.pgid = self.popen.pid  # a new session's leader: pgid == pid

    def alive(self):
        return self.popen.poll() is None

    def group_alive(self):
        self.popen.poll()  # reap the leader, or a zombie leader keeps the group "alive"
        try:
            os.killpg(self.pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    def signal_group(self, sig):
        try:
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def close_log(self):
        if self._log:
            self._log.close()
            self._log = None

    def tail(self, lines=40):
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                data = f.read().decode("utf-8", "replace")
        except OSError as e:
            return f"(cannot read {self.log_path}: {e})"
        return "\n".join(data.splitlines()[-lines:])


def stop_all(procs):
    """SIGTERM every group, wait up to GRACE_SECONDS, then SIGKILL what is left."""
    live = [p for p in procs if p.group_alive()]
    for p in live:
        p.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while live and time.monotonic() < deadline:
        time.sleep(0.05)
        live = [p for p in live if p.group_alive()]
    for p in live:
        log(f"{p.name} did not stop within {GRACE_SECONDS}s of SIGTERM; sending SIGKILL")
        p.signal_group(signal.SIGKILL)
    deadline = time.monotonic() + GRACE_SECONDS
    while live and time.monotonic() < deadline:
        time.sleep(0.05)
        live = [p for p in live if p.group_alive()]
    for p in live:
        log(f"WARNING: process group {p.pgid} ({p.name}) survived SIGKILL")
    for p in procs:
        try:
            p.popen.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            pass
        p.close_log()


def free_port(also_next=False, host="127.0.0.1"):
    """A free port on host (and port+1 free too, when also_next)."""
    for _ in range(200):
        s = socket.socket()
        s.bind((host, 0))
        port = s.getsockname()[1]
        try:
            if not also_next:
                return port
            t = socket.socket()
            try:
                t.bind((host, port + 1))
                return port
            except OSError:
                continue
            finally:
                t.close()
        finally:
            s.close()
    raise Failure(f"no free port pair on {host}")


# --------------------------------------------------------------------------------------------
# Certificates (run under the virtualenv's python: `testenv.py _certs DIR`)

def make_certs(out, extra_ips=()):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    os.makedirs(out, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    until = now + datetime.timedelta(days=30)

    def write(name, data, private=False):
        path = os.path.join(out, name)
        with open(path, "wb") as f:
            f.write(data)
        if private:
            os.chmod(path, 0o600)

    def key_pem(key):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def name(cn, org=None):
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    def ca(cn):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn)).issuer_name(name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(ca_key, ca_cert, subject, usage, sans=None):
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, b.sign(ca_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    ca_key, ca_cert = ca("secret-relay-testenv-ca")
    write("ca.crt", ca_cert.public_bytes(pem))
    write("ca.key", key_pem(ca_key), private=True)
    key, cert = leaf(ca_key, ca_cert, name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
        x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
    ] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips])
    write("apiserver.crt", cert.public_bytes(pem))
    write("apiserver.key", key_pem(key), private=True)
    # OpenBao's TLS listener, under its own CA: only a store's caBundle makes it trusted.
    vault_ca_key, vault_ca_cert = ca("secret-relay-testenv-vault-ca")
    write("vault-ca.crt", vault_ca_cert.public_bytes(pem))
    key, cert = leaf(vault_ca_key, vault_ca_cert, name("openbao"), ExtendedKeyUsageOID.SERVER_AUTH, [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
    ] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips])
    write("vault.crt", cert.public_bytes(pem))
    write("vault.key", key_pem(key), private=True)

    client_ca_key, client_ca_cert = ca("secret-relay-testenv-client-ca")
    write("client-ca.crt", client_ca_cert.public_bytes(pem))
    write("client-ca.key", key_pem(client_ca_key), private=True)
    key, cert = leaf(client_ca_key, client_ca_cert, name("admin", "system:masters"),
                     ExtendedKeyUsageOID.CLIENT_AUTH)
    write("admin.crt", cert.public_bytes(pem))
    write("admin.key", key_pem(key), private=True)

    # The node's: kubelet's client identity, its serving certificate, and kube-apiserver's
    # client certificate towards kubelet (logs, exec).
    key, cert = leaf(client_ca_key, client_ca_cert, name("system:node:localhost", "system:nodes"),
                     ExtendedKeyUsageOID.CLIENT_AUTH)
    write("kubelet.crt", cert.public_bytes(pem))
    write("kubelet.key", key_pem(key), private=True)
    key, cert = leaf(ca_key, ca_cert, name("localhost"), ExtendedKeyUsageOID.SERVER_AUTH, [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
    ])
    write("kubelet-serving.crt", cert.public_bytes(pem))
    write("kubelet-serving.key", key_pem(key), private=True)
    key, cert = leaf(client_ca_key, client_ca_cert,
                     name("kube-apiserver-kubelet-client", "system:masters"),
                     ExtendedKeyUsageOID.CLIENT_AUTH)
    write("apiserver-kubelet-client.crt", cert.public_bytes(pem))
    write("apiserver-kubelet-client.key", key_pem(key), private=True)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write("sa.key", key_pem(sa_key), private=True)
    write("sa.pub", sa_key.public_key().public_bytes(
        pem, serialization.PublicFormat.SubjectPublicKeyInfo))


# --------------------------------------------------------------------------------------------
# Health checks

def http_get(url, context=None, timeout=2.0):
    """(status, body) of GET url, 4xx/5xx included; (None, error) when no HTTP answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as r:
            return r.status, r.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        try:
            body = e.read(4096).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001
            body = ""
        return e.code, body
    except (urllib.error.URLError, OSError, ssl.SSLError) as e:
        return None, str(e)


def http_probe(url, ok=lambda status: status == 200, context=None):
    """A probe for wait_ready: (ready, what the server last said)."""
    def probe():
        status, body = http_get(url, context)
        said = f"HTTP {status}: {body.strip()[-1500:]}" if status is not None else body
        return ok(status), f"GET {url} -> {said}"
    return probe


def wait_ready(proc, what, timeout, probe):
    """Polls probe() -> (ready, detail) until ready; fails naming the step if the process
    exits or the timeout passes."""
    start = time.monotonic()
    while True:
        check_signal()
        ready, detail = probe()
        if ready:
            log(f"{what} ready in {time.monotonic() - start:.1f}s")
            return
        if proc is not None and not proc.alive():
            raise StartFailure(proc, f"{what} exited with code {proc.popen.returncode} before becoming ready")
        if time.monotonic() - start > timeout:
            raise StartFailure(proc, f"{what} did not become ready in {timeout}s "
                                     f"(last check: {detail})")
        sleep(0.25)


class StartFailure(Failure):
    def __init__(self, proc, msg):
        super().__init__(msg)
        self.proc = proc


# --------------------------------------------------------------------------------------------
# The environment

class Env:
    # For node.py, which gets this object.
    StartFailure = StartFailure
    check_signal = staticmethod(check_signal)
    free_port = staticmethod(free_port)

    def __init__(self, args):
        self.args = args
        self.node = None
        self.host = "127.0.0.1"  # where the servers listen; the bridge address with --node
        self.procs = []
        self.tmp_created = False
        self.dir = None
        self.values = {}

    # -- setup

    def prepare_dir(self):
        if self.args.dir:
            self.dir = os.path.abspath(self.args.dir)
            os.makedirs(self.dir, exist_ok=True)
            for sub in ("etcd", "bin", "certs", "bao-home", "images"):
                shutil.rmtree(os.path.join(self.dir, sub), ignore_errors=True)
        else:
            self.dir = tempfile.mkdtemp(prefix="secret-relay-testenv-")
            self.tmp_created = True
        self.log_dir = os.path.join(self.dir, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        os.makedirs(os.path.join(self.dir, "bin"), exist_ok=True)

    def build_tools(self):
        out_path = os.path.join(self.dir, "build-tools.out")
        with open(out_path, "wb") as out:
            argv = ["bash", os.path.join(HERE, "build-tools.sh")]
            if self.args.node:
                argv.append("all,node")
            p = Proc("build-tools.sh", argv,
                     env=os.environ.copy(), stdout=out)
            # stderr is inherited: build progress shows on the terminal
            self.procs.append(p)
            while p.popen.poll() is None:
                sleep(0.2)
        self.procs.remove(p)
        if p.popen.returncode != 0:
            raise Failure(f"build-tools.sh failed with exit code {p.popen.returncode} "
                          f"(logs in {CACHE_HINT}/logs)")
        tools = {}
        with open(out_path) as f:
            for line in f:
                k, sep, v = line.strip().partition("=")
                if sep and k.endswith("_BIN"):
                    tools[k] = v
        for k in ("KUBE_BIN", "ETCD_BIN", "HELM_BIN", "SOPS_BIN", "PROMTOOL_BIN", "VENV_BIN"):
            if k not in tools:
                raise Failure(f"build-tools.sh did not print {k}=")
        self.tools = tools

        def tool(var, d, name):
            path = os.path.join(tools[d], name)
            if not os.access(path, os.X_OK):
                raise Failure(f"{name} not found at {path}")
            os.symlink(path, os.path.join(self.dir, "bin", name))
            self.values[var] = path
            return path

        self.kubectl = tool("KUBECTL", "KUBE_BIN", "kubectl")
        self.kube_apiserver = tool("KUBE_APISERVER", "KUBE_BIN", "kube-apiserver")
        self.etcd = tool("ETCD", "ETCD_BIN", "etcd")
        tool("HELM", "HELM_BIN", "helm")
        tool("SOPS", "SOPS_BIN", "sops")
        tool("PROMTOOL", "PROMTOOL_BIN", "promtool")
        self.bao = tool("BAO", "VENV_BIN", "bao")
        self.moto = tool("MOTO_SERVER", "VENV_BIN", "moto_server")
        self.venv_python = os.path.join(tools["VENV_BIN"], "python")
        if self.args.node:
            if "KUBE_NODE_BIN" not in tools:
                raise Failure("build-tools.sh did not print KUBE_NODE_BIN=")
            self.node_bins = {name: tool(name.upper().replace("-", "_"), "KUBE_NODE_BIN", name)
                              for name in ("kubelet", "kube-scheduler", "kube-controller-manager")}

    def start(self, name, argv, env=None):
        p = Proc(name, argv, env=env or self.child_env(),
                 log_path=os.path.join(self.log_dir, f"{name}.log"), cwd=self.dir)
        self.procs.append(p)
        log(f"started {name} (pid {p.popen.pid}, log {p.log_path})")
        return p

    def child_env(self):
        env = os.environ.copy()
        for k in ("KUBECONFIG", "VAULT_ADDR", "VAULT_TOKEN", "BAO_ADDR", "BAO_TOKEN"):
            env.pop(k, None)
        return env

    def gen_certs(self):
        self.certs = os.path.join(self.dir, "certs")
        extra = [] if self.host == "127.0.0.1" else [self.host]
        r = subprocess.run([self.venv_python, os.path.abspath(__file__), "_certs", self.certs, *extra],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise Failure(f"generating certificates failed:\n{r.stdout}{r.stderr}")

    def start_servers(self):
        existing = os.environ.get("SECRET_RELAY_EXISTING_KUBECONFIG")
        etcd = None
        h = self.host
        self.gen_certs()
        if not existing:
            etcd_port, peer_port = free_port(), free_port()
            etcd_url = f"http://127.0.0.1:{etcd_port}"
            peer_url = f"http://127.0.0.1:{peer_port}"
            etcd = self.start("etcd", [
                self.etcd, "--name=testenv", f"--data-dir={os.path.join(self.dir, 'etcd')}",
                f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=testenv={peer_url}", "--unsafe-no-fsync=true",
                # 8 GiB instead of the default 2 GiB: the scale benchmark at N = 100,000 keeps
                # some 300,000 objects and their history between compactions. Only a limit:
                # the database grows as before.
                "--quota-backend-bytes=8589934592",
            ])
            self.values["ETCD_ENDPOINT"] = etcd_url

        bao_port = free_port(also_next=True, host=h)  # bao's cluster listener takes port+1
        bao_tls_port = free_port(also_next=True, host=h)
        bao_home = os.path.join(self.dir, "bao-home")  # `bao server -dev` writes ~/.vault-token
        os.makedirs(bao_home, exist_ok=True)
        bao_config = os.path.join(bao_home, "tls-listener.hcl")
        with open(bao_config, "w") as f:
            f.write(f'listener "tcp" {{\n  address = "{h}:{bao_tls_port}"\n'
                    f'  cluster_address = "{h}:{bao_tls_port + 1}"\n'
                    f'  tls_cert_file = "{self.certs}/vault.crt"\n'
                    f'  tls_key_file = "{self.certs}/vault.key"\n}}\n')
        bao_env = self.child_env()
        bao_env["HOME"] = bao_home
        bao = self.start("bao", [
            self.bao, "server", "-dev", "-dev-root-token-id=root",
            f"-dev-listen-address={h}:{bao_port}", f"-config={bao_config}",
        ], env=bao_env)
        vault_addr = f"http://{h}:{bao_port}"
        vault_tls_addr = f"https://{h}:{bao_tls_port}"

        moto_port = free_port(host=h)
        moto = self.start("moto", [self.moto, "-H", h, "-p", str(moto_port)])
        moto_url = f"http://{h}:{moto_port}"

        timeout = self.args.timeout
        if existing:
            self.use_existing_cluster(existing)
        else:
            wait_ready(etcd, "etcd", timeout, http_probe(f"{etcd_url}/health"))
            self.start_apiserver(etcd_url, timeout)

        wait_ready(bao, "bao", timeout, http_probe(f"{vault_addr}/v1/sys/health"))
        wait_ready(bao, "bao (TLS)", timeout, http_probe(
            f"{vault_tls_addr}/v1/sys/health",
            context=ssl.create_default_context(cafile=f"{self.certs}/vault-ca.crt")))
        wait_ready(moto, "moto_server", timeout,
                   http_probe(f"{moto_url}/", ok=lambda status: status is not None))

        self.values.update({
            "VAULT_ADDR": vault_addr, "VAULT_TOKEN": "root",
            "VAULT_TLS_ADDR": vault_tls_addr, "VAULT_TLS_CA_FILE": f"{self.certs}/vault-ca.crt",
            "BAO_ADDR": vault_addr, "BAO_TOKEN": "root",
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        })

    def start_apiserver(self, etcd_url, timeout):
        c = self.certs
        h = self.host
        port = free_port(host=h)
        url = f"https://{h}:{port}"
        if self.args.node:
            # Pods get ServiceAccount tokens; kubelet is a node (Node authorizer); the
            # apiserver reaches kubelet at its Hostname address, "localhost".
            node_flags = [
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={c}/apiserver-kubelet-client.crt",
                f"--kubelet-client-key={c}/apiserver-kubelet-client.key",
                f"--kubelet-certificate-authority={c}/ca.crt",
                "--kubelet-preferred-address-types=Hostname,InternalIP",
            ]
        else:
            node_flags = ["--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount"]
        api = self.start("kube-apiserver", [
            self.kube_apiserver,
            f"--etcd-servers={etcd_url}",
            f"--bind-address={h}", f"--secure-port={port}",
            f"--advertise-address={h}", "--endpoint-reconciler-type=none",
            f"--cert-dir={c}",
            f"--tls-cert-file={c}/apiserver.crt", f"--tls-private-key-file={c}/apiserver.key",
            f"--client-ca-file={c}/client-ca.crt",
            *node_flags,
            f"--service-account-issuer={url}",
            f"--service-account-key-file={c}/sa.pub",
            f"--service-account-signing-key-file={c}/sa.key",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            # /debug/pprof only when asked for (hack/bench_floor.py's CPU profiles).
            f"--profiling={'true' if os.environ.get('SECRET_RELAY_TESTENV_PROFILING') == '1' else 'false'}",
        ])
        ctx = ssl.create_default_context(cafile=f"{c}/ca.crt")
        ctx.load_cert_chain(f"{c}/admin.crt", f"{c}/admin.key")
        wait_ready(api, "kube-apiserver", timeout, http_probe(f"{url}/readyz?verbose", context=ctx))

        kubeconfig = os.path.join(self.dir, "kubeconfig")
        self.write_kubeconfig(kubeconfig, url, "admin.crt", "admin.key")
        self.values.update({
            "KUBECONFIG": kubeconfig, "KUBE_APISERVER_URL": url,
            "KUBE_APISERVER_HOST": h, "KUBE_APISERVER_PORT": str(port),
            "KUBE_CA_FILE": f"{c}/ca.crt",
            "KUBE_ADMIN_CERT_FILE": f"{c}/admin.crt", "KUBE_ADMIN_KEY_FILE": f"{c}/admin.key",
        })

    def write_kubeconfig(self, path, url, cert, key):
        """A kubeconfig for url with the client certificate files cert/key of self.certs."""
        def b64(name):
            with open(os.path.join(self.certs, name), "rb") as f:
                return base64.b64encode(f.read()).decode()

        # JSON is YAML: no YAML library needed.
        with open(path, "w") as f:
            json.dump({
                "apiVersion": "v1", "kind": "Config",
                "clusters": [{"name": "testenv", "cluster": {
                    "server": url, "certificate-authority-data": b64("ca.crt")}}],
                "users": [{"name": "user", "user": {
                    "client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
                "contexts": [{"name": "testenv", "context": {"cluster": "testenv", "user": "user"}}],
                "current-context": "testenv",
            }, f, indent=2)
        os.chmod(path, 0o600)

    def prepare_node(self):
        """The node's host-only bridge, whose address the servers then listen on (Pods have
        their own network namespaces and cannot reach this machine's loopback)."""
        import node as node_mod
        if os.geteuid() != 0:
            raise Failure("--node needs root (containerd, kubelet)")
        self.node = node_mod.Node(self, self.node_bins, log)
        try:
            self.node.prepare()
        except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
            raise Failure(f"preparing the node: {e}") from e
        self.host = node_mod.BRIDGE_IP

    def start_node(self):
        """The node (node.py): containerd with the pause image and --import archives, the
        scheduler and controller-manager, kubelet; waits for the Node to be Ready."""
        import node as node_mod
        timeout = self.args.timeout
        self.node.start_containerd(timeout)
        images = os.path.join(self.dir, "images")
        os.makedirs(images, exist_ok=True)
        pause = os.path.join(images, "pause.tar")
        r = subprocess.run(["bash", os.path.join(HERE, "..", "image", "build.sh"), "pause", pause],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise Failure(f"building the pause image failed:\n{r.stdout}{r.stderr}")
        self.node.import_image(pause)
        for archive in self.args.import_images or []:
            self.node.import_image(os.path.abspath(archive))
        url = self.values["KUBE_APISERVER_URL"]
        self.node.start_control_plane(url)
        self.node.start_kubelet(url, timeout)
        self.node.wait_ready({**self.child_env(), "KUBECONFIG": self.values["KUBECONFIG"]},
                             max(timeout, 120))
        self.values.update({
            "TESTENV_NODE": node_mod.NODE_NAME,
            "CONTAINERD_ADDRESS": self.node.sock,
        })

    def use_existing_cluster(self, kubeconfig):
        kubeconfig = os.path.abspath(kubeconfig)
        if not os.path.isfile(kubeconfig):
            raise Failure(f"SECRET_RELAY_EXISTING_KUBECONFIG={kubeconfig}: no such file")
        r = subprocess.run([self.kubectl, "config", "view", "--raw", "--minify", "--flatten",
                            "-o", "json"], env={**self.child_env(), "KUBECONFIG": kubeconfig},
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise Failure(f"reading {kubeconfig} with kubectl failed: {r.stderr.strip()}")
        cluster = json.loads(r.stdout)["clusters"][0]["cluster"]
        self.values.update({"KUBECONFIG": kubeconfig, "KUBE_APISERVER_URL": cluster["server"]})
        ca = cluster.get("certificate-authority-data")
        if ca:
            path = os.path.join(self.dir, "kube-ca.crt")
            with open(path, "wb") as f:
                f.write(base64.b64decode(ca))
            self.values["KUBE_CA_FILE"] = path
        else:
            self.values["KUBE_CA_FILE"] = ""
        log(f"using the existing cluster at {cluster['server']} ({kubeconfig})")
        start = time.monotonic()
        while True:
            r = subprocess.run([self.kubectl, "get", "--raw=/readyz"],
                               env={**self.child_env(), "KUBECONFIG": kubeconfig},
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
            if r.returncode == 0:
                return
            if time.monotonic() - start > self.args.timeout:
                raise Failure(f"existing cluster at {cluster['server']} is not ready: {r.stderr.strip()}")
            sleep(1)

    def write_env(self):
        env_file = os.path.join(self.dir, "env")
        self.values["SECRET_RELAY_TESTENV"] = env_file
        self.values["TESTENV_LOG_DIR"] = self.log_dir
        self.values["TESTENV_DIR"] = self.dir
        for k, v in self.values.items():
            if "\n" in v:
                raise Failure(f"{k} contains a newline")
        tmp = env_file + ".tmp"
        with open(tmp, "w") as f:
            for k in sorted(self.values):
                f.write(f"{k}={self.values[k]}\n")
        os.replace(tmp, env_file)
        return env_file

    def cmd_env(self):
        env = self.child_env()
        for k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN",
                  "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                  "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "VAULT_NAMESPACE", "BAO_NAMESPACE"):
            env.pop(k, None)
        env.update(self.values)
        env["PATH"] = os.path.join(self.dir, "bin") + os.pathsep + env.get("PATH", "")
        return env

    # -- teardown

    def teardown(self):
        # CMD (and a running build) first, then the node, then the servers, etcd last:
        # kube-apiserver shuts down quietly only while etcd is still there.
        node_procs = ("containerd", "kubelet", "kube-scheduler", "kube-controller-manager")
        cmd = [p for p in self.procs if p.name not in SERVERS and p.name not in node_procs]
        if cmd:
            stop_all(cmd)
            self.procs = [p for p in self.procs if p not in cmd]
        if self.node is not None:
            try:
                self.node.stop(stop_all)
            except Exception as e:  # noqa: BLE001 - the servers must still be stopped
                log(f"WARNING: stopping the node: {e}")
        first = [p for p in self.procs if p.name not in SERVERS]
        last = [p for p in self.procs if p.name == "etcd"]
        middle = [p for p in self.procs if p not in first and p not in last]
        for tier in (first, middle, last):
            if tier:
                stop_all(tier)
        self.procs = []
        if self.dir and self.tmp_created and not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        elif self.dir:
            log(f"kept {self.dir}")


def main_env(args):
    env = Env(args)
    code = 1
    try:
        check_signal()
        env.prepare_dir()
        env.build_tools()
        if args.node:
            env.prepare_node()
        env.start_servers()
        if args.node:
            env.start_node()
        env_file = env.write_env()
        log(f"environment ready: {env_file}")
        if args.command == "up":
            print(env_file, flush=True)
            while True:
                check_signal()
                for p in env.procs:
                    if not p.alive():
                        raise StartFailure(p, f"{p.name} exited with code {p.popen.returncode}")
                sleep(0.5)
        # CMD runs in its own process group, i.e. in the background of a terminal: it gets
        # our stdin unless that is a terminal (reading it would stop CMD with SIGTTIN).
        stdin = subprocess.DEVNULL if sys.stdin is None or sys.stdin.isatty() else None
        cmd = Proc(args.cmd[0], args.cmd, env=env.cmd_env(), stdout=None, stdin=stdin)
        env.procs.append(cmd)
        while cmd.popen.poll() is None:
            if pending_signal() is not None:
                break
            time.sleep(0.1)
        if pending_signal() is not None:
            raise Interrupted(pending_signal())
        rc = cmd.popen.returncode
        code = rc if rc >= 0 else 128 - rc
        if code != 0:
            log(f"command exited with code {code}")
    except Interrupted as e:
        log(f"{e}; stopping")
        code = 128 + e.signum
    except StartFailure as e:
        log(f"FAILED: {e}")
        if e.proc is not None and e.proc.log_path:
            log(f"last lines of {e.proc.log_path}:")
            print(e.proc.tail(), file=sys.stderr, flush=True)
        if env.tmp_created and not args.keep:
            log("run with --keep to keep the logs")
        code = 1
    except Failure as e:
        log(f"FAILED: {e}")
        code = 1
    except FileNotFoundError as e:
        log(f"FAILED: {e}")
        code = 127
    finally:
        # Further signals are recorded but no longer interrupt the cleanup.
        env.teardown()
    return code


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "_certs":
        make_certs(sys.argv[2], sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "up"):
        p = sub.add_parser(name)
        p.add_argument("--dir", help="working directory (default: a fresh temporary one)")
        p.add_argument("--keep", action="store_true", help="keep the temporary directory")
        p.add_argument("--node", action="store_true",
                       help="also start a node (containerd, kubelet, scheduler, controller-manager)")
        p.add_argument("--import", dest="import_images", action="append", metavar="OCI_ARCHIVE",
                       help="with --node: an image archive to import into the node's containerd")
        p.add_argument("--timeout", type=int, default=int(os.environ.get("TESTENV_START_TIMEOUT", 60)),
                       help="seconds each server may take to become ready (default 60)")
        if name == "run":
            p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args()
    if args.command == "run":
        if args.cmd and args.cmd[0] == "--":
            args.cmd = args.cmd[1:]
        if not args.cmd:
            parser.error("run: give a command after --")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    return main_env(args)


if __name__ == "__main__":
    sys.exit(main())
