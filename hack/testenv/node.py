"""The test environment's node (`testenv.py up|run --node`): containerd, kubelet,
kube-scheduler and kube-controller-manager on this machine, every file under DIR/node.

Pods have their own network namespaces on a host-only bridge (BRIDGE, BRIDGE_IP/24, no
uplink, no NAT, no forwarding rules): with --node the servers listen on BRIDGE_IP instead of
127.0.0.1, so Pods and this machine's tests reach the same addresses. (hostNetwork Pods would
reach loopback, but two replicas of one Deployment could not both bind the admin port.)

What it changes outside DIR, and gives back at teardown:
  - the bridge BRIDGE with BRIDGE_IP, deleted (the Pods' network namespaces and runc's state
    are under DIR; a /var/run/netns/cni-* new since the start is removed too);
  - a cgroup `/secret-relay-testenv-<pid>` in every cgroup v1 hierarchy (kubelet's cgroupRoot;
    kubelet adds it to a cgroup2 hierarchy mounted beside them), removed after the containers;
  - the sysctls kubelet sets (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops, ...),
    restored to the values read before it started;
  - the /var/log/containers links kubelet makes to the pod logs under DIR;
  - what kubelet, containerd's shims and the CNI library keep at fixed paths (HOST_PATHS): its
    device-plugin socket, the shims' sockets, the CNI results of our sandboxes; each of those
    directories that did not exist before is removed again.
Mounts that kubelet and containerd make under DIR are unmounted, containers and shims killed.

Facts about this kind of machine (a VM with cgroup v1, no CAP_SYS_RESOURCE):
  - kubelet needs cgroupDriver cgroupfs, failCgroupV1 false, and its cgroupRoot created
    beforehand in every hierarchy (cpuset.cpus/mems copied from the parent);
  - runc cannot set a negative oom_score_adj: containerd `restrict_oom_score_adj` and kubelet
    `oomScoreAdj: 0`;
  - the node is NotReady without a CNI config; the bridge and host-local plugins suffice.
"""

import json
import os
import shutil
import subprocess
import time

NODE_NAME = "localhost"  # the apiserver reaches kubelet by this Hostname address
PAUSE_IMAGE = "localhost/secret-relay-pause:testenv"
BRIDGE = "srtestenv0"
BRIDGE_IP = "10.233.0.1"
POD_SUBNET = "10.233.0.0/24"
NETNS_DIR = "/var/run/netns"
# Fixed paths outside DIR that the node's parts create (deepest first): kubelet's device-plugin
# directory, its pod-log links, the shims' socket directory, the CNI library's result cache.
HOST_PATHS = ("/var/lib/kubelet/device-plugins", "/var/lib/kubelet", "/var/log/containers",
              "/run/containerd/s", "/run/containerd", "/var/lib/cni/results", "/var/lib/cni",
              NETNS_DIR)
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
           "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")


def _read(path):
    with open(path) as f:
        return f.read().strip()


def _write(path, value):
    with open(path, "w") as f:
        f.write(value)


def cgroup_hierarchies(types=("cgroup",)):
    """Mount points of the cgroup hierarchies of these filesystem types (from
    /proc/self/mountinfo): v1 by default."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype = right.split()[0] if right else ""
            if fstype in types:
                out.append(left.split()[4])
    return out


def mounts_under(prefix):
    """Mount points below prefix, deepest first."""
    prefix = prefix.rstrip("/") + "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix):
                points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


class Node:
    """One node on this machine. `env` is testenv.py's Env (its start(), dir, certs, values)."""

    def __init__(self, env, bins, log):
        self.env = env
        self.bins = bins
        self.log = log
        self.dir = os.path.join(env.dir, "node")
        self.cgroup_name = f"secret-relay-testenv-{os.getpid()}"
        self.cgroups = []
        self.sysctls = {}
        self.started = False
        self.bridge_made = False
        self.netns_before = set()
        self.sock = None  # containerd's, once started
        self.new_host_paths = []
        self.container_ids = set()  # seen at teardown: their CNI results are ours

    # -- start

    def prepare(self):
        for sub in ("containerd", "kubelet", "cni", "pod-logs"):
            path = os.path.join(self.dir, sub)
            if os.path.exists(path):
                # A kept directory of an earlier run: its mounts would make rmtree fail.
                for point in mounts_under(path):
                    subprocess.run(["umount", "-l", point], check=False)
                shutil.rmtree(path, ignore_errors=True)
        os.makedirs(self.dir, exist_ok=True)
        for name in SYSCTLS:
            try:
                self.sysctls[name] = _read(f"/proc/sys/{name}")
            except OSError:
                pass
        self.new_host_paths = [p for p in HOST_PATHS if not os.path.exists(p)]
        self.started = True
        self.make_cgroups()
        self.make_bridge()

    def make_bridge(self):
        if os.path.exists(f"/sys/class/net/{BRIDGE}"):
            raise RuntimeError(f"the interface {BRIDGE} exists: another test environment with a "
                               f"node runs (or one was killed: `ip link del {BRIDGE}`)")
        try:
            self.netns_before = set(os.listdir(NETNS_DIR))
        except FileNotFoundError:
            pass
        self.bridge_made = True
        for argv in (["ip", "link", "add", BRIDGE, "type", "bridge"],
                     ["ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE],
                     ["ip", "link", "set", BRIDGE, "up"]):
            subprocess.run(argv, check=True, capture_output=True, stdin=subprocess.DEVNULL)

    def make_cgroups(self):
        # kubelet makes the same tree in a cgroup2 hierarchy mounted beside them (hybrid
        # mode): removed at teardown too.
        self.cgroups = [os.path.join(root, self.cgroup_name)
                        for root in cgroup_hierarchies(("cgroup", "cgroup2"))]
        for root in cgroup_hierarchies():
            path = os.path.join(root, self.cgroup_name)
            os.makedirs(path, exist_ok=True)
            if os.path.exists(os.path.join(root, "cpuset.cpus")):
                for f in ("cpuset.cpus", "cpuset.mems"):
                    _write(os.path.join(path, f), _read(os.path.join(root, f)))

    def cni_bin_dir(self):
        for d in CNI_BIN_DIRS:
            if os.access(os.path.join(d, "bridge"), os.X_OK):
                return d
        raise RuntimeError(f"no CNI plugins in {' or '.join(CNI_BIN_DIRS)}")

    def start_containerd(self, timeout):
        d = os.path.join(self.dir, "containerd")
        cni_conf = os.path.join(self.dir, "cni", "net.d")
        os.makedirs(cni_conf, exist_ok=True)
        os.makedirs(os.path.join(d, "root"), exist_ok=True)
        self.sock = os.path.join(d, "containerd.sock")
        self.write_cni_config(cni_conf)
        config = os.path.join(d, "config.toml")
        with open(config, "w") as f:
            f.write(f"""version = 2
root = "{d}/root"
state = "{d}/state"
plugin_dir = ""
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # runc cannot lower oom_score_adj without CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # The Pods' network namespaces under DIR instead of /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{self.cni_bin_dir()}"
    conf_dir = "{cni_conf}"
""")
        self.containerd = self.env.start("containerd", ["containerd", "--config", config])
        start = time.monotonic()
        while True:
            self.env.check_signal()
            r = self.ctr("version", check=False)
            if r.returncode == 0:
                self.log(f"containerd ready in {time.monotonic() - start:.1f}s")
                return
            if not self.containerd.alive() or time.monotonic() - start > timeout:
                raise self.env.StartFailure(self.containerd, f"containerd not ready: {r.stderr.strip()}")
            time.sleep(0.2)

    def write_cni_config(self, conf_dir):
        # The bridge made in prepare(), which already has BRIDGE_IP: not the Pods' gateway
        # (isGateway would turn on IP forwarding), as Pods only talk to BRIDGE_IP.
        with open(os.path.join(conf_dir, "10-testenv.conflist"), "w") as f:
            json.dump({
                "cniVersion": "1.0.0", "name": "testenv",
                "plugins": [{
                    "type": "bridge", "bridge": BRIDGE, "isGateway": False, "ipMasq": False,
                    "hairpinMode": False,
                    "ipam": {"type": "host-local",
                             "ranges": [[{"subnet": POD_SUBNET, "rangeStart": "10.233.0.10"}]],
                             "dataDir": os.path.join(self.dir, "cni", "ipam")},
                }],
            }, f, indent=2)

    def ctr(self, *args, check=True, timeout=120):
        r = subprocess.run(["ctr", "--address", self.sock, "-n", "k8s.io", *args],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {r.stderr.strip()}")
        return r

    def import_image(self, archive):
        r = self.ctr("images", "import", "--all-platforms", archive)
        self.log(f"imported {os.path.basename(archive)}: {r.stdout.strip()}")

    def start_kubelet(self, api_url, timeout):
        c = self.env.certs
        d = os.path.join(self.dir, "kubelet")
        for sub in ("root", "certs", "volume-plugins"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        kubeconfig = os.path.join(d, "kubeconfig")
        self.env.write_kubeconfig(kubeconfig, api_url, "kubelet.crt", "kubelet.key")
        port = self.env.free_port()
        healthz = self.env.free_port()
        config = os.path.join(d, "config.json")  # JSON is YAML
        with open(config, "w") as f:
            json.dump({
                "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
                "address": "127.0.0.1", "port": port, "readOnlyPort": 0,
                "healthzBindAddress": "127.0.0.1", "healthzPort": healthz,
                "tlsCertFile": f"{c}/kubelet-serving.crt",
                "tlsPrivateKeyFile": f"{c}/kubelet-serving.key",
                "authentication": {"anonymous": {"enabled": False},
                                   "webhook": {"enabled": True},
                                   "x509": {"clientCAFile": f"{c}/client-ca.crt"}},
                "authorization": {"mode": "Webhook"},
                "containerRuntimeEndpoint": f"unix://{self.sock}",
                "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{self.cgroup_name}",
                "failCgroupV1": False, "failSwapOn": False,
                "oomScoreAdj": 0,  # no CAP_SYS_RESOURCE to lower it
                "makeIPTablesUtilChains": False,
                "volumePluginDir": os.path.join(d, "volume-plugins"),
                "podLogsDir": os.path.join(self.dir, "pod-logs"),
                "hairpinMode": "none",
                "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
                "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                                 "imagefs.available": "1%"},
                "shutdownGracePeriod": "0s",
                "resolvConf": "/etc/resolv.conf",
                "serializeImagePulls": False,
                "syncFrequency": "10s",
                "nodeStatusUpdateFrequency": "5s",
                "fileCheckFrequency": "20s",
                "registerNode": True,
            }, f, indent=2)
        self.kubelet = self.env.start("kubelet", [
            self.bins["kubelet"], f"--config={config}", f"--kubeconfig={kubeconfig}",
            f"--root-dir={d}/root", f"--cert-dir={d}/certs",
            f"--hostname-override={NODE_NAME}", "--v=2",
        ])
        self.kubelet_port = port
        self.kubelet_started = time.monotonic()

    def start_control_plane(self, api_url):
        c = self.env.certs
        d = os.path.join(self.dir, "control-plane")
        os.makedirs(d, exist_ok=True)
        kubeconfig = os.path.join(d, "admin.kubeconfig")
        self.env.write_kubeconfig(kubeconfig, api_url, "admin.crt", "admin.key")
        self.scheduler = self.env.start("kube-scheduler", [
            self.bins["kube-scheduler"], f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false", "--bind-address=127.0.0.1",
            f"--secure-port={self.env.free_port()}", f"--cert-dir={d}/scheduler-certs",
        ])
        self.controller_manager = self.env.start("kube-controller-manager", [
            self.bins["kube-controller-manager"], f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false", "--bind-address=127.0.0.1",
            f"--secure-port={self.env.free_port()}", f"--cert-dir={d}/cm-certs",
            f"--root-ca-file={c}/ca.crt",
            f"--service-account-private-key-file={c}/sa.key",
            "--use-service-account-credentials=false",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,"
            "-route,-persistentvolume-binder,-attachdetach,-persistentvolume-expander,"
            "-ephemeral-volume,-pv-protection,-pvc-protection",
            "--concurrent-deployment-syncs=2", "--concurrent-replicaset-syncs=2",
        ])

    def wait_ready(self, kubectl_env, timeout):
        """Waits for the Node to be Ready and the `default` ServiceAccount to exist."""
        kubectl = self.env.kubectl
        start = time.monotonic()
        detail = ""
        while True:
            self.env.check_signal()
            for p in (self.kubelet, self.containerd, self.scheduler, self.controller_manager):
                if not p.alive():
                    raise self.env.StartFailure(p, f"{p.name} exited with code {p.popen.returncode}")
            # Ready, and the not-ready taint gone (the node lifecycle controller removes it).
            r = subprocess.run([kubectl, "get", "node", NODE_NAME, "-o",
                                "jsonpath={.status.conditions[?(@.type=='Ready')].status} "
                                "{.spec.taints[*].key}"],
                               env=kubectl_env, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=30)
            ready = r.returncode == 0 and r.stdout.strip() == "True"
            detail = r.stdout.strip() or r.stderr.strip()
            if ready:
                sa = subprocess.run([kubectl, "get", "serviceaccount", "default", "-n", "default"],
                                    env=kubectl_env, stdin=subprocess.DEVNULL,
                                    capture_output=True, text=True, timeout=30)
                if sa.returncode == 0:
                    secs = time.monotonic() - self.kubelet_started
                    self.log(f"node {NODE_NAME} Ready {secs:.1f}s after kubelet started")
                    self.env.values["TESTENV_NODE_READY_SECONDS"] = f"{secs:.1f}"
                    return
                detail = "no ServiceAccount default/default yet"
            if time.monotonic() - start > timeout:
                raise self.env.StartFailure(self.kubelet, f"node not Ready in {timeout}s (last: {detail})")
            time.sleep(0.5)

    # -- teardown

    def stop(self, stop_all):
        """Kubelet first (it would restart containers), then every container and shim, then
        containerd and the control plane; then mounts, cgroups, sysctls, log links."""
        if not self.started:
            return
        procs = {p.name: p for p in self.env.procs}
        if "kubelet" in procs:
            stop_all([procs["kubelet"]])
            self.env.procs.remove(procs["kubelet"])
        if "containerd" in procs and procs["containerd"].alive():
            self.kill_containers()
        for name in ("containerd", "kube-scheduler", "kube-controller-manager"):
            if name in procs:
                stop_all([procs[name]])
                self.env.procs.remove(procs[name])
        self.kill_shims()
        self.remove_netns()
        if self.bridge_made:
            subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
            self.bridge_made = False
        for point in mounts_under(self.dir):
            r = subprocess.run(["umount", point], capture_output=True, text=True)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True, text=True)
        self.remove_cgroups()
        for name, value in self.sysctls.items():
            try:
                if _read(f"/proc/sys/{name}") != value:
                    _write(f"/proc/sys/{name}", value)
            except OSError as e:
                self.log(f"WARNING: cannot restore sysctl {name}={value}: {e}")
        logs = "/var/log/containers"
        if os.path.isdir(logs):
            for name in os.listdir(logs):
                path = os.path.join(logs, name)
                if os.path.islink(path) and os.readlink(path).startswith(self.dir + "/"):
                    os.unlink(path)
        self.remove_host_paths()
        self.started = False

    def remove_host_paths(self):
        """Our files at kubelet's, the shims' and the CNI library's fixed paths; then those of
        HOST_PATHS that did not exist before, when empty."""
        for path in ("/var/lib/kubelet/device-plugins/kubelet.sock",):
            try:
                os.unlink(path)
            except OSError:
                pass
        # NETWORK-CONTAINERID-IFNAME of the sandboxes still there at teardown (kubelet, stopped
        # first, did not tear their networks down).
        results = "/var/lib/cni/results"
        if os.path.isdir(results):
            for name in os.listdir(results):
                if any(f"-{cid}-" in name for cid in self.container_ids):
                    os.unlink(os.path.join(results, name))
        for path in self.new_host_paths:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                self.log(f"WARNING: leaving {path}: {e}")

    def kill_containers(self):
        try:
            r = self.ctr("tasks", "ls", "-q", check=False, timeout=30)
            ids = r.stdout.split()
            for cid in ids:
                self.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False, timeout=30)
            deadline = time.monotonic() + 10
            for cid in ids:
                while time.monotonic() < deadline:
                    if self.ctr("tasks", "delete", cid, check=False, timeout=30).returncode == 0:
                        break
                    time.sleep(0.2)
            for cid in self.ctr("containers", "ls", "-q", check=False, timeout=30).stdout.split():
                self.container_ids.add(cid)
                self.ctr("containers", "delete", cid, check=False, timeout=30)
        except (subprocess.TimeoutExpired, OSError) as e:
            self.log(f"WARNING: removing containers: {e}")

    def remove_netns(self):
        """The Pods' network namespaces (kubelet, stopped first, did not remove the
        sandboxes): their veths go with them."""
        try:
            names = set(os.listdir(NETNS_DIR)) - self.netns_before
        except FileNotFoundError:
            return
        for name in sorted(names):
            if not name.startswith("cni-"):
                continue
            path = os.path.join(NETNS_DIR, name)
            subprocess.run(["umount", path], capture_output=True, check=False)
            try:
                os.unlink(path)
            except OSError as e:
                self.log(f"WARNING: cannot remove {path}: {e}")

    def kill_shims(self):
        """containerd-shim processes started for this containerd (they outlive it)."""
        if self.sock is None:
            return
        needle = self.sock.encode()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and b"containerd-shim" in argv[0] and needle in argv:
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass

    def remove_cgroups(self):
        for top in self.cgroups:
            if not os.path.isdir(top):
                continue
            dirs = [root for root, _, _ in os.walk(top)]
            for path in sorted(dirs, key=lambda p: -p.count("/")):
                for _ in range(50):
                    try:
                        os.rmdir(path)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.1)
                else:
                    self.log(f"WARNING: cannot remove cgroup {path}")
