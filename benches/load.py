#!/usr/bin/env python3
"""Load benchmark: many buildctl clients at once against `kiln buildkitd` and a real `buildkitd`,
measured in the same run, and a soak run of one kiln daemon. See benches/README.md.

    sudo python3 benches/load.py [--n 1,5,20,50] [--repeat R] [--json FILE]
                                 [--kiln PATH] [--buildkit DIR] [--keep]
    sudo python3 benches/load.py soak [--builds 500] [--gc-keep 40MB] [--every 25]

Every client builds its own small Dockerfile: FROM a busybox seeded into a loopback registry, a
RUN that sleeps 1 s and writes a token no other build has (so nothing is cached), a COPY of a
200 KB file from its context, and a push to the same registry. Each builder gets a fresh daemon
with an empty state directory for each N. Nothing leaves loopback.

Exit status: 1 if any kiln build failed, 2 on a set-up error, else 0 (slow is MISS, not failure).
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def log(msg):
    print(f"[load {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"FATAL: {msg}")
    sys.exit(2)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid, key):
    """A field of /proc/PID/status as an int (kB for memory), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cpu_seconds(pid):
    """User + system time of pid and its reaped children (runc, the steps' processes)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def dir_size(path):
    out = subprocess.run(["du", "-sk", path], capture_output=True, text=True).stdout.split()
    return int(out[0]) * 1024 if out else 0


def unmount_under(path):
    """Lazily unmount anything left mounted below path, deepest first."""
    out = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True).stdout
    prefix = path.rstrip("/") + "/"
    for m in sorted((m for m in out.splitlines() if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


class Sampler(threading.Thread):
    """Samples a daemon's RSS, open fds and threads every 50 ms while a phase runs."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.stop = threading.Event()
        self.peak_fds = 0
        self.peak_threads = 0

    def run(self):
        while not self.stop.is_set():
            self.peak_fds = max(self.peak_fds, open_fds(self.pid) or 0)
            self.peak_threads = max(self.peak_threads, proc_status(self.pid, "Threads") or 0)
            self.stop.wait(0.05)

    def finish(self):
        self.stop.set()
        self.join()


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="kiln-load.", dir="/var/tmp")
        self.logs = os.path.join(self.work, "logs")
        os.makedirs(self.logs)
        self.procs = []
        self.kiln_failed = False
        self.reg = None
        bk = args.buildkit
        self.buildctl = os.path.join(bk, "bin", "buildctl")
        self.buildkitd = os.path.join(bk, "bin", "buildkitd")
        self.have_buildkit = not args.no_buildkit and os.access(self.buildkitd, os.X_OK)
        if not args.no_buildkit and not self.have_buildkit:
            print(f"SKIP buildkit: {self.buildkitd} not found")

    # ------------------------------------------------------------------ processes
    def spawn(self, argv, logname, **kw):
        f = open(os.path.join(self.logs, logname), "w")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    @staticmethod
    def stop(p):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def cleanup(self):
        for p in self.procs:
            self.stop(p)
        unmount_under(self.work)
        if self.args.keep:
            log(f"kept {self.work}")
        else:
            if self.kiln_failed:
                shutil.copytree(self.logs, self.work + ".logs")
                log(f"kiln failed at least once; logs kept in {self.work}.logs")
            shutil.rmtree(self.work, ignore_errors=True)

    # ------------------------------------------------------------------ set-up
    def start_registry(self):
        self.reg = f"127.0.0.1:{free_port()}"
        cfg = os.path.join(self.work, "registry.yml")
        with open(cfg, "w") as f:
            f.write(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {self.work}/registry-data\n"
                f"http:\n  addr: {self.reg}\n  secret: kiln-load\n"
            )
        p = self.spawn(["/usr/bin/docker-registry", "serve", cfg], "registry.log")
        for _ in range(100):
            try:
                socket.create_connection(tuple(self.reg.split(":")), 0.2).close()
                return
            except OSError:
                if p.poll() is not None:
                    die("registry exited")
                time.sleep(0.1)
        die(f"registry did not come up on {self.reg}")

    def write_configs(self, gc_keep=None):
        self.kconf = os.path.join(self.work, "kiln.toml")
        with open(self.kconf, "w") as f:
            f.write("# kiln load bench: defaults\n")
            if gc_keep:
                f.write(f'gc_keep_storage = "{gc_keep}"\n')
        self.bkconf = os.path.join(self.work, "buildkitd.toml")
        with open(self.bkconf, "w") as f:
            f.write(f'[registry."{self.reg}"]\n  http = true\n')

    def seed_busybox(self):
        ctx = os.path.join(self.work, "seed")
        root = os.path.join(ctx, "rootfs")
        for d in ["bin", "etc", "tmp", "root", "dev", "proc", "sys"]:
            os.makedirs(os.path.join(root, d))
        os.chmod(os.path.join(root, "tmp"), 0o1777)
        shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
        applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout
        for a in applets.split():
            if a != "busybox":
                os.symlink("busybox", os.path.join(root, "bin", a))
        with open(os.path.join(root, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n")
        with open(os.path.join(root, "etc", "group"), "w") as f:
            f.write("root:x:0:\n")
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write("FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/sbin:/usr/bin:/sbin:/bin\n")
        seed_root = os.path.join(self.work, "seed-root")
        argv = [self.args.kiln, "--root", seed_root, "--config", self.kconf, "build",
                "--progress", "plain", "-t", f"{self.reg}/busybox:latest", "--push", ctx]
        with open(os.path.join(self.logs, "seed.log"), "w") as f:
            if subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT).returncode != 0:
                die(f"seeding busybox failed (log: {self.logs}/seed.log)")
        unmount_under(seed_root)
        shutil.rmtree(seed_root, ignore_errors=True)
        log(f"seeded {self.reg}/busybox:latest")

    def contexts(self, tag, n):
        """n fresh build contexts, each with a Dockerfile no other build shares."""
        dirs = []
        for i in range(n):
            d = os.path.join(self.work, "ctx", f"{tag}-{i}")
            os.makedirs(d)
            with open(os.path.join(d, "Dockerfile"), "w") as f:
                f.write(f"FROM {self.reg}/busybox:latest\n"
                        f"RUN sleep 1 && echo {uuid.uuid4().hex} > /token\n"
                        "COPY blob.bin /blob.bin\n")
            with open(os.path.join(d, "blob.bin"), "wb") as f:
                f.write(os.urandom(200 * 1024))
            dirs.append(d)
        return dirs

    # ------------------------------------------------------------------ daemons
    def wait_daemon(self, p, sock):
        for _ in range(300):
            r = subprocess.run([self.buildctl, "--addr", f"unix://{sock}", "debug", "workers"],
                               capture_output=True)
            if r.returncode == 0:
                return True
            if p.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def start_daemon(self, builder, tag):
        root = os.path.join(self.work, "state", tag)
        sock = os.path.join(self.work, f"{tag}.sock")
        if builder == "buildkit":
            argv = [self.buildkitd, "--root", root, "--addr", f"unix://{sock}", "--oci-worker=true",
                    "--containerd-worker=false", "--config", self.bkconf]
        else:
            argv = [self.args.kiln, "--root", root, "--config", self.kconf, "buildkitd",
                    "--addr", f"unix://{sock}"]
        p = self.spawn(argv, f"daemon-{tag}.log")
        if not self.wait_daemon(p, sock):
            self.stop(p)
            die(f"{builder} daemon did not start (log: {self.logs}/daemon-{tag}.log)")
        return p, sock, root

    def stop_daemon(self, p, root):
        self.stop(p)
        unmount_under(root)
        # Deleted in the background of nothing: the next phase starts on a quiet disk.
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["sync"])

    def build_argv(self, sock, ctx, name):
        return [self.buildctl, "--addr", f"unix://{sock}", "build", "--progress", "plain",
                "--frontend", "dockerfile.v0", "--local", f"context={ctx}",
                "--local", f"dockerfile={ctx}",
                "--output", f"type=image,name={name},push=true,registry.insecure=true"]

    # ------------------------------------------------------------------ phases
    def load_phase(self, builder, n, rep):
        tag = f"{builder}-n{n}-r{rep}"
        ctxs = self.contexts(tag, n)
        p, sock, root = self.start_daemon(builder, tag)
        sampler = Sampler(p.pid)
        sampler.start()
        t0 = time.monotonic()
        clients = []
        for i, ctx in enumerate(ctxs):
            argv = self.build_argv(sock, ctx, f"{self.reg}/load/{tag}-{i}:latest")
            clients.append((time.monotonic(), self.spawn(argv, f"{tag}-{i}.log")))
        latencies, failures = [], 0
        for start, c in clients:
            try:
                rc = c.wait(self.args.timeout)
            except subprocess.TimeoutExpired:
                self.stop(c)
                rc = 124
            latencies.append(time.monotonic() - start)
            if rc != 0:
                failures += 1
        wall = time.monotonic() - t0
        sampler.finish()
        row = {
            "builder": builder, "n": n, "rep": rep, "wall": wall,
            "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "failures": failures,
            "peak_rss_kib": proc_status(p.pid, "VmHWM"),
            "peak_fds": sampler.peak_fds, "fds_after": open_fds(p.pid),
            "peak_threads": sampler.peak_threads,
            "cpu_s": cpu_seconds(p.pid),
        }
        self.stop_daemon(p, root)
        shutil.rmtree(os.path.join(self.work, "ctx"), ignore_errors=True)
        if failures and builder == "kiln":
            self.kiln_failed = True
        log(f"{builder:8} N={n:<3} #{rep}: wall {wall:.2f} s, p95 {row['p95']:.2f} s, "
            f"{failures} failed, peak RSS {(row['peak_rss_kib'] or 0) / 1024:.0f} MiB, "
            f"peak fds {row['peak_fds']}, CPU {row['cpu_s']:.1f} s")
        return row

    def run_load(self):
        ns = [int(x) for x in self.args.n.split(",")]
        builders = ["kiln"] + (["buildkit"] if self.have_buildkit else [])
        rows = []
        for n in ns:
            for rep in range(1, self.args.repeat + 1):
                order = builders if rep % 2 else list(reversed(builders))
                for b in order:
                    rows.append(self.load_phase(b, n, rep))
        report_load(rows, ns, self.have_buildkit)
        return rows

    def run_soak(self):
        a = self.args
        p, sock, root = self.start_daemon("kiln", "soak")
        curve, times = [], []
        for i in range(1, a.builds + 1):
            ctx = self.contexts(f"soak-{i}", 1)[0]
            t = time.monotonic()
            r = subprocess.run(self.build_argv(sock, ctx, f"{self.reg}/soak/s:{i}"),
                               capture_output=True, text=True)
            times.append(time.monotonic() - t)
            shutil.rmtree(os.path.dirname(ctx), ignore_errors=True)
            if r.returncode != 0:
                self.kiln_failed = True
                log(f"soak build {i} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
            if i == 1 or i % a.every == 0:
                point = {
                    "build": i, "rss_kib": proc_status(p.pid, "VmRSS"),
                    "fds": open_fds(p.pid), "threads": proc_status(p.pid, "Threads"),
                    "state_bytes": dir_size(root),
                    "build_s": statistics.mean(times[-a.every:]),
                }
                curve.append(point)
                log(f"soak {i:4}: RSS {point['rss_kib'] / 1024:.1f} MiB, fds {point['fds']}, "
                    f"threads {point['threads']}, state {point['state_bytes'] / 2**20:.1f} MiB, "
                    f"build {point['build_s']:.2f} s")
        self.stop_daemon(p, root)
        report_soak(curve, times, a)
        return curve


def percentile(xs, q):
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def report_load(rows, ns, have_buildkit):
    def mean(builder, n, key):
        vals = [r[key] for r in rows if r["builder"] == builder and r["n"] == n]
        return statistics.mean(vals) if vals else None

    def total(builder, n, key):
        return sum(r[key] for r in rows if r["builder"] == builder and r["n"] == n)

    print("\n## Load: N concurrent buildctl builds (cold RUN + 200 KB context + push)\n")
    print("| N | kiln wall | BuildKit wall | ratio | kiln p95 | BuildKit p95 | ratio | kiln p50 "
          "| BuildKit p50 | failures kiln/BK | peak RSS kiln/BK MiB | peak fds kiln/BK | CPU s kiln/BK "
          "| verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in ns:
        kw, kp95, kp50 = mean("kiln", n, "wall"), mean("kiln", n, "p95"), mean("kiln", n, "p50")
        kf = total("kiln", n, "failures")
        krss = max(r["peak_rss_kib"] or 0 for r in rows if r["builder"] == "kiln" and r["n"] == n)
        kfd = max(r["peak_fds"] for r in rows if r["builder"] == "kiln" and r["n"] == n)
        kcpu = mean("kiln", n, "cpu_s")
        if have_buildkit:
            bw, bp95, bp50 = (mean("buildkit", n, k) for k in ("wall", "p95", "p50"))
            bf = total("buildkit", n, "failures")
            brss = max(r["peak_rss_kib"] or 0 for r in rows if r["builder"] == "buildkit" and r["n"] == n)
            bfd = max(r["peak_fds"] for r in rows if r["builder"] == "buildkit" and r["n"] == n)
            bcpu = mean("buildkit", n, "cpu_s")
            ok = kw <= bw and kp95 <= bp95 and kf == 0
            print(f"| {n} | {kw:.2f} | {bw:.2f} | {kw / bw:.2f} | {kp95:.2f} | {bp95:.2f} | "
                  f"{kp95 / bp95:.2f} | {kp50:.2f} | {bp50:.2f} | {kf}/{bf} | "
                  f"{krss / 1024:.0f}/{brss / 1024:.0f} | {kfd}/{bfd} | {kcpu:.1f}/{bcpu:.1f} | "
                  f"{'PASS' if ok else 'MISS'} |")
        else:
            print(f"| {n} | {kw:.2f} | - | - | {kp95:.2f} | - | - | {kp50:.2f} | - | {kf}/- | "
                  f"{krss / 1024:.0f}/- | {kfd}/- | {kcpu:.1f}/- | - |")
    print("\nTimes in seconds, the mean of the repetitions; failures summed; peaks the largest.")


def report_soak(curve, times, a):
    print(f"\n## Soak: {a.builds} builds in a row, gc_keep_storage = {a.gc_keep}\n")
    print("| build | RSS MiB | open fds | threads | state dir MiB | mean build s (last window) |")
    print("|---|---|---|---|---|---|")
    for p in curve:
        print(f"| {p['build']} | {p['rss_kib'] / 1024:.1f} | {p['fds']} | {p['threads']} | "
              f"{p['state_bytes'] / 2**20:.1f} | {p['build_s']:.2f} |")
    k = min(10, len(times) // 2)
    if k:
        first, last = statistics.median(times[1:k + 1]), statistics.median(times[-k:])
        print(f"\nMedian build time, builds 2–{k + 1}: {first:.2f} s; last {k}: {last:.2f} s "
              f"(ratio {last / first:.2f}).")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="load", choices=["load", "soak"])
    ap.add_argument("--n", default="1,5,20,50", help="client counts, comma-separated")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--kiln", default=os.path.join(REPO, "target", "release", "kiln"))
    ap.add_argument("--buildkit", default="/opt/buildkit-current",
                    help="directory with bin/buildkitd and bin/buildctl")
    ap.add_argument("--no-buildkit", action="store_true")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per build")
    ap.add_argument("--builds", type=int, default=500, help="soak: builds in a row")
    ap.add_argument("--every", type=int, default=25, help="soak: sample every this many builds")
    ap.add_argument("--gc-keep", default="40MB", help="soak: the daemon's gc_keep_storage")
    ap.add_argument("--json", help="also write the raw rows here")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    a = ap.parse_args()
    if os.geteuid() != 0:
        die("must run as root (buildkitd and kiln's RUN steps need it)")
    if not os.access(a.kiln, os.X_OK):
        die(f"kiln not found at {a.kiln} (cargo build --release -p kiln, or --kiln PATH)")
    for t in ["/usr/sbin/runc", "/usr/bin/docker-registry", "/bin/busybox"]:
        if not os.access(t, os.X_OK):
            die(f"{t} not installed (Debian packages: runc docker-registry busybox-static)")
    b = Bench(a)
    if not os.access(b.buildctl, os.X_OK):
        die(f"buildctl not found at {b.buildctl}: the clients are buildctl (see README)")
    for k in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]:
        os.environ.pop(k, None)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"
    try:
        b.start_registry()
        b.write_configs(a.gc_keep if a.mode == "soak" else None)
        b.seed_busybox()
        out = b.run_load() if a.mode == "load" else b.run_soak()
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
    finally:
        b.cleanup()
    sys.exit(1 if b.kiln_failed else 0)


if __name__ == "__main__":
    main()
