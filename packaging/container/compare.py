"""Compares two `patchgap-agent scan` inventories of the same moment: one
from the agent image (the DaemonSet's view of the host, through /proc of the
host PID namespace and the runtimes' roots under /host) and one from the
same agent on the host.

usage: compare.py CONTAINER.json HOST_BEFORE.json HOST_AFTER.json [PID ...]

The host is scanned before and after the image: a process whose two host
scans differ changed while the scans ran (a compiler mapping its next file)
and is listed, not compared.

Each process present in both (the same pid and start time) must have the
same answers: executable, command line, user, cgroup, workload, root, and
every artifact with its path, kind, package and version, stale flag. Its
workload must be the same in both (kind, runtime, container name, image,
digest, owner). The PIDs given must be in both, with at least one package.

Processes in only one inventory are listed, not failed: they started or
exited between the two scans, or they are one of the two scans themselves.
The only differences allowed in a process are the listed ones (`EXPECTED`),
each with its reason. Prints a table of what agreed, exits 1 on any other
difference.
"""
import json
import sys

# (field, reason): fields that may differ between the two views of one
# process, and why. Nothing else may.
EXPECTED = {
    # None since the host's namespaces come from kthreadd where PID 1's
    # cannot be read: a field listed here must say why it may differ.
}

WORKLOAD_FIELDS = ("kind", "runtime", "container_id", "container_name", "namespace",
                   "pod", "owner", "image", "image_id", "image_digest", "unit", "cgroup")


def artifacts(p):
    return sorted(
        (a["path"], a["kind"], (a.get("package") or {}).get("name", ""),
         (a.get("package") or {}).get("version", ""), bool(a.get("stale")))
        for a in p["artifacts"])


def fields(p):
    out = {k: p[k] for k in ("exe", "cmdline", "uid", "euid", "cgroup", "workload", "root",
                             "ppid", "comm", "mnt_ns", "net_ns", "net_ns_name")}
    for k, v in (p.get("privilege") or {}).items():
        out["privilege." + k] = v
    return out


def main():
    container, host, after = (json.load(open(f)) for f in sys.argv[1:4])
    wanted = {int(a) for a in sys.argv[4:]}
    key = lambda p: (p["pid"], p["start_ticks"])  # noqa: E731
    cp = {key(p): p for p in container["processes"]}
    hp = {key(p): p for p in host["processes"]}
    ap = {key(p): p for p in after["processes"]}
    moving = sorted(k for k in hp.keys() & cp.keys()
                    if k not in ap or (fields(ap[k]), artifacts(ap[k])) != (fields(hp[k]), artifacts(hp[k])))
    cw = {w["id"]: w for w in container["workloads"]}
    hw = {w["id"]: w for w in host["workloads"]}
    both = sorted(cp.keys() & hp.keys() - set(moving))
    failures, allowed, compared_artifacts, workloads = [], {}, 0, set()
    for k in both:
        c, h = cp[k], hp[k]
        cf, hf = fields(c), fields(h)
        for f in sorted(cf.keys() | hf.keys()):
            if cf.get(f) != hf.get(f):
                if f in EXPECTED:
                    allowed[f] = allowed.get(f, 0) + 1
                else:
                    failures.append(f"pid {k[0]} ({h['comm']}): {f}: image {cf.get(f)!r}, host {hf.get(f)!r}")
        ca, ha = artifacts(c), artifacts(h)
        compared_artifacts += len(ha)
        if ca != ha:
            only_c = sorted(set(ca) - set(ha))[:5]
            only_h = sorted(set(ha) - set(ca))[:5]
            failures.append(f"pid {k[0]} ({h['comm']}): artifacts differ: image only {only_c}, host only {only_h}")
        if c["workload"] in cw and h["workload"] in hw:
            workloads.add(h["workload"])
            for f in WORKLOAD_FIELDS:
                if cw[c["workload"]].get(f) != hw[h["workload"]].get(f):
                    failures.append(f"workload {h['workload']}: {f}: image {cw[c['workload']].get(f)!r}, host {hw[h['workload']].get(f)!r}")
    print(f"changed while scanning, not compared: {len(moving)} ({', '.join(hp[k]['comm'] for k in moving)})")
    present = {p for p, _ in both}
    for pid in sorted(wanted):
        if pid not in present:
            failures.append(f"pid {pid} is not in both inventories")
        elif not any(a[2] for a in artifacts(hp[next(k for k in both if k[0] == pid)])):
            failures.append(f"pid {pid} has no package in the host's inventory: nothing was compared")
    only_c = sorted(cp.keys() - hp.keys())
    only_h = sorted(hp.keys() - cp.keys())
    print(f"processes in both: {len(both)}; artifacts compared: {compared_artifacts}; workloads: {len(workloads)} ({', '.join(sorted(workloads))})")
    print(f"only in the image's scan: {len(only_c)} ({', '.join(cp[k]['comm'] for k in only_c)}); "
          f"only in the host's: {len(only_h)} ({', '.join(hp[k]['comm'] for k in only_h)}): started or exited between the scans, or the scans themselves")
    for f, n in sorted(allowed.items()):
        print(f"expected difference in {n} processes: {f}: {EXPECTED[f]}")
    for f in failures:
        print("DIFFERENT: " + f)
    sys.exit(1 if failures else 0)


main()
