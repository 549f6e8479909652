#!/usr/bin/env bash
# The images under Podman with the Kubernetes manifests' settings, as root:
#
#   - the collector image as its user (10001), no capabilities, read-only
#     root, its data on a volume;
#   - the agent image as the DaemonSet runs it: host PID namespace, the
#     runtimes' roots read-only under /host, tracefs read-only, bpffs and the
#     cgroup tree writable, read-only root, all capabilities dropped but the
#     DaemonSet's five, no-new-privileges, seccomp unconfined; in the
#     collector's network namespace, so nothing listens on the host;
#   - the agent must report a process of user `nobody` on the host with
#     libc6 mapped, with eBPF and containment on;
#   - the agent image's inventory of the host (`patchgap-agent scan` with
#     the same mounts and privileges) must equal the same binary's on the
#     host, process by process, for the same moment: the host's processes
#     and another Podman container's (compare.py lists what may differ,
#     and why);
#   - and, for the record, with the runtime's default seccomp profile
#     instead, eBPF must be off (which is why the DaemonSet relaxes it).
#
#   packaging/container/test.sh    # builds the images first when missing
#
# Removes its containers, volume and bpffs directories, also on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf 'packaging/container/test.sh: %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }
[ "$(id -u)" = 0 ] || { say "SKIP: needs root (host PID namespace, eBPF)"; exit 77; }
command -v podman >/dev/null || { say "SKIP: podman is missing"; exit 77; }

version=$(cargo metadata --no-deps --format-version 1 --locked \
    | /usr/bin/python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cli"))')
for d in agent collector; do
    podman image exists "localhost/patchgap-$d:$version" || { packaging/container/build.sh >&2; break; }
done

# runc, not crun, and explicit ulimits: PLATFORM.md.
run=(podman --runtime /usr/sbin/runc run --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
tag=pgtest-$$
sleeper=
scans=
cleanup() {
    local rc=$?
    podman rm -f -i -t 2 "$tag-agent" "$tag-agent-default" "$tag-collector" "$tag-other" "$tag-copy" >/dev/null 2>&1 || true
    [ -n "$scans" ] && rm -rf "$scans"
    podman volume rm -f "$tag-data" >/dev/null 2>&1 || true
    [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null || true
    rm -rf "/sys/fs/bpf/$tag-agent" "/sys/fs/bpf/$tag-agent-default"
    exit $rc
}
trap cleanup EXIT

"${run[@]}" -d --name "$tag-collector" --read-only --cap-drop=all \
    --security-opt no-new-privileges -v "$tag-data:/var/lib/patchgap-collector" \
    "localhost/patchgap-collector:$version" --listen 127.0.0.1:7373 >/dev/null
cli() { podman exec "$tag-collector" /usr/bin/patchgap "$@" --collector 127.0.0.1:7373; }
for _ in $(seq 50); do cli hosts >/dev/null 2>&1 && break; sleep 0.2; done
cli hosts >/dev/null || { podman logs "$tag-collector" >&2; fail "the collector image does not answer"; }
[ "$(podman top "$tag-collector" user | tail -n1)" = patchgap-collector ] || fail "the collector does not run as patchgap-collector"
say "collector: answers, as patchgap-collector"

# The DaemonSet's capabilities, from the manifest itself.
caps=$(sed -n 's/^ *add: \[\(.*\)\]$/\1/p' packaging/kubernetes/30-agent.yaml | tr -d '" ')
mounts=(-v /sys/kernel/tracing:/sys/kernel/tracing:ro -v /sys/fs/bpf:/sys/fs/bpf -v /sys/fs/cgroup:/sys/fs/cgroup)
for d in /var/lib/containers /run/containers /run/containerd /var/lib/containerd /var/lib/docker/containers /var/log/pods; do
    [ -d "$d" ] && mounts+=(-v "$d:/host$d:ro")
done
# Named network namespaces are bind mounts made at any time: rslave, as the
# DaemonSet's HostToContainer.
mkdir -p /run/netns
mounts+=(-v /run/netns:/host/run/netns:ro,rslave)
agent() {
    local name=$1; shift
    "${run[@]}" -d --name "$name" --pid=host --network "container:$tag-collector" \
        --read-only --tmpfs /tmp --tmpfs /var/lib/patchgap-agent:mode=0700 "${mounts[@]}" \
        --cap-drop=all --cap-add="$caps" --security-opt no-new-privileges "$@" \
        "localhost/patchgap-agent:$version" --collector http://127.0.0.1:7373 \
        --contain-dir "/sys/fs/bpf/$name" --label "run=$name" >/dev/null
}
# The host's process the agent must find: another user's, started now.
setpriv --reuid nobody --regid nogroup --clear-groups /usr/bin/sleep 300 &
sleeper=$!

host_field() { # host_field RUN FIELD: the host's FIELD as the agent labelled RUN reported it
    cli hosts -o json | /usr/bin/python3 -c '
import json, sys
h = [h for h in json.load(sys.stdin)["hosts"] if h["labels"].get("run") == sys.argv[1]]
print(h[0][sys.argv[2]] if h else "none")' "$1" "$2"
}

agent "$tag-agent" --security-opt seccomp=unconfined
found=
for _ in $(seq 100); do
    if cli query libc6 -o json 2>/dev/null | grep -q "\"pid\": *$sleeper\b" \
        && [ "$(host_field "$tag-agent" ebpf)" != none ]; then found=1; break; fi
    sleep 0.2
done
[ -n "$found" ] || { podman logs "$tag-agent" >&2; fail "the agent image did not report the host's process $sleeper (nobody) with libc6"; }
[ "$(host_field "$tag-agent" ebpf)" = True ] || { podman logs "$tag-agent" >&2; fail "eBPF is off in the agent image with the DaemonSet's settings"; }
[ "$(host_field "$tag-agent" contain)" = True ] || fail "containment is off in the agent image"
say "agent (DaemonSet settings, caps $caps): the host's nobody process with libc6, eBPF on, containment on"
podman stop -t 5 "$tag-agent" >/dev/null

# Both inventories of one moment: the image's view of the host and the
# same binary's on the host (before and after it), with another container
# running.
tests/runtimes/image.sh >/dev/null
"${run[@]}" -d --name "$tag-other" localhost/patchgap-test-debian:bookworm-2 busybox sleep 300 >/dev/null
other=$(podman inspect -f '{{.State.Pid}}' "$tag-other")
scans=$(mktemp -d /var/tmp/patchgap-compare.XXXXXX)
podman create --name "$tag-copy" "localhost/patchgap-agent:$version" >/dev/null
podman cp "$tag-copy:/usr/bin/patchgap-agent" "$scans/patchgap-agent"
"$scans/patchgap-agent" scan >"$scans/host.json"
"${run[@]}" --rm --pid=host --network "container:$tag-collector" --read-only --tmpfs /tmp \
    "${mounts[@]}" --cap-drop=all --cap-add="$caps" --security-opt no-new-privileges \
    --security-opt seccomp=unconfined --entrypoint /usr/bin/patchgap-agent \
    "localhost/patchgap-agent:$version" scan --runtime-root /host >"$scans/image.json" \
    || fail "the agent image's scan failed"
"$scans/patchgap-agent" scan >"$scans/after.json"
/usr/bin/python3 packaging/container/compare.py "$scans/image.json" "$scans/host.json" "$scans/after.json" "$sleeper" "$other" >&2 \
    || fail "the agent image's inventory differs from the host agent's (above)"
say "agent image's inventory equals the host agent's for the same processes (above)"

agent "$tag-agent-default"
for _ in $(seq 50); do [ "$(host_field "$tag-agent-default" ebpf)" != none ] && break; sleep 0.2; done
[ "$(host_field "$tag-agent-default" ebpf)" = False ] || fail "eBPF came on under the default seccomp profile: the DaemonSet's Unconfined may no longer be needed"
say "agent with the default seccomp profile: eBPF off ($(host_field "$tag-agent-default" ebpf_reason))"
say ok
