#!/usr/bin/env bash
# The package's acceptance test, on this machine, as root:
#
#   1. build target/debian/patchgap_<version>_amd64.deb (packaging/deb/build.sh);
#   2. lintian: no errors;
#   3. dpkg -i; the files, the collector's user and the state directories;
#   4. systemd-analyze verify on both installed units;
#   5. start each unit's ExecStart as the unit would run it: the collector as
#      its user with no capabilities, the agent as root with only the unit's
#      CapabilityBoundingSet, both with no_new_privs (setpriv; PID 1 is not
#      systemd here), on a free port of 127.0.0.1;
#   6. the CLI sees this host, eBPF on, and a process started for the test
#      with libc6 mapped;
#   7. dpkg -P removes everything but the collector's data, and says where
#      it is.
#
#   packaging/test.sh              # builds the .deb (incremental) first
#   packaging/test.sh --no-build   # tests target/debian's .deb as it is
#
# Refuses to run when a patchgap package is already installed. Cleans up
# after itself, also when a step fails: processes, the package, the
# collector's user and data, its bpffs directory.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

say() { printf 'packaging/test.sh: %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }
need() { command -v "$1" >/dev/null || { say "SKIP: $1 is missing (${2})"; exit 77; }; }

[ "$(id -u)" = 0 ] || { say "SKIP: needs root (dpkg -i, setpriv, eBPF)"; exit 77; }
need cargo-deb "cargo install cargo-deb --version =3.8.0 --locked"
need lintian "apt-get install lintian"
need setpriv "util-linux"
need systemd-analyze "systemd"
if dpkg-query -W -f '${Status}' patchgap 2>/dev/null | grep -q installed; then
    fail "a patchgap package is installed already; this test installs and purges its own"
fi

started=$(date +%s)
work=$(mktemp -d /tmp/patchgap-pkgtest.XXXXXX)
contain_dir=/sys/fs/bpf/patchgap-pkgtest-$$
pids=()
cleanup() {
    local rc=$?
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if dpkg-query -W -f '${Status}' patchgap 2>/dev/null | grep -q 'ok installed\|config-files'; then
        dpkg -P patchgap >/dev/null 2>&1 || true
    fi
    rm -rf /var/lib/patchgap-collector /var/lib/patchgap-agent "$contain_dir" "$work"
    if getent passwd patchgap-collector >/dev/null; then deluser --system --quiet patchgap-collector 2>/dev/null || true; fi
    if getent group patchgap-collector >/dev/null; then delgroup --system --quiet patchgap-collector 2>/dev/null || true; fi
    [ $rc = 0 ] && say "ok in $(( $(date +%s) - started )) s"
    exit $rc
}
trap cleanup EXIT

# 1. Build.
if [ "${1:-}" = --no-build ]; then
    deb=$(ls -t target/debian/patchgap_*_amd64.deb | head -n1)
else
    deb=$(packaging/deb/build.sh | tail -n1)
fi
[ -f "$deb" ] || fail "no package at $deb"
say "package $deb ($(du -h "$deb" | cut -f1))"

# 2. lintian: errors fail; warnings are listed (packaging/README.md
#    explains the ones that stay).
lintian --fail-on error --no-tag-display-limit "$deb" >"$work/lintian" 2>&1 || {
    cat "$work/lintian" >&2
    fail "lintian reports errors"
}
say "lintian: no errors ($(grep -c '^W:' "$work/lintian" || true) warning(s))"

# 3. Install.
dpkg -i "$deb" >"$work/dpkg-i" 2>&1 || { cat "$work/dpkg-i" >&2; fail "dpkg -i"; }
for f in /usr/bin/patchgap-agent /usr/bin/patchgap-collector /usr/bin/patchgap \
    /etc/patchgap/agent.toml /etc/patchgap/collector.toml \
    /lib/systemd/system/patchgap-agent.service /lib/systemd/system/patchgap-collector.service; do
    [ -e "$f" ] || fail "$f is not installed"
done
getent passwd patchgap-collector | grep -q ':/usr/sbin/nologin$' || fail "no system user patchgap-collector with nologin"
[ "$(stat -c '%U %a' /var/lib/patchgap-collector)" = "patchgap-collector 700" ] || fail "/var/lib/patchgap-collector: $(stat -c '%U %a' /var/lib/patchgap-collector)"
[ "$(stat -c '%U %a' /var/lib/patchgap-agent)" = "root 700" ] || fail "/var/lib/patchgap-agent: $(stat -c '%U %a' /var/lib/patchgap-agent)"
say "installed: binaries, units, /etc/patchgap, user patchgap-collector, state directories"

# 4. The units, as installed.
for u in patchgap-agent patchgap-collector; do
    out=$(systemd-analyze verify "/lib/systemd/system/$u.service" 2>&1) || fail "systemd-analyze verify $u: $out"
    [ -z "$out" ] || fail "systemd-analyze verify $u: $out"
done
say "systemd-analyze verify: clean"

# 5. Each ExecStart as its unit runs it. The command and the capabilities
#    are read from the installed unit files, so the test follows them.
unit_value() { sed -n "s/^$2=//p" "/lib/systemd/system/$1.service" | tail -n1; }
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
collector_cmd=$(unit_value patchgap-collector ExecStart)
[ "$(unit_value patchgap-collector User)" = patchgap-collector ] || fail "the collector's unit does not run it as patchgap-collector"
# The port is the one flag added: a flag wins over the config file's key.
# shellcheck disable=SC2086
setpriv --reuid patchgap-collector --regid patchgap-collector --init-groups \
    --inh-caps=-all --bounding-set=-all --no-new-privs \
    -- $collector_cmd --listen "127.0.0.1:$port" >"$work/collector.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    grep -q 'collector listening' "$work/collector.log" && break
    kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/collector.log" >&2; fail "the collector exited"; }
    sleep 0.1
done
grep -q 'collector listening' "$work/collector.log" || { cat "$work/collector.log" >&2; fail "the collector does not listen"; }
grep -q 'data_dir=/var/lib/patchgap-collector' "$work/collector.log" || fail "the collector did not take data-dir from /etc/patchgap/collector.toml"
say "collector: pid ${pids[0]} as $(ps -o user= -p "${pids[0]}"), CapEff $(awk '/^CapEff/ {print $2}' "/proc/${pids[0]}/status"), 127.0.0.1:$port"

# CAP_SYS_PTRACE CAP_DAC_READ_SEARCH ... -> +sys_ptrace,+dac_read_search,...
caps=$(unit_value patchgap-agent CapabilityBoundingSet)
# The DaemonSet grants the agent the same set (packaging/kubernetes).
k8s_caps=$(sed -n 's/^ *add: \[\(.*\)\]$/\1/p' packaging/kubernetes/30-agent.yaml | tr -d '", ' | tr '\n' ' ')
unit_caps=$(for c in $caps; do printf '%s' "${c#CAP_}"; done)
[ "$(echo "$k8s_caps" | tr -d ' ')" = "$unit_caps" ] || fail "the DaemonSet adds [$k8s_caps], the unit bounds to [$caps]"
setpriv_caps=$(for c in $caps; do printf ',+%s' "$(echo "${c#CAP_}" | tr 'A-Z' 'a-z')"; done)
agent_cmd=$(unit_value patchgap-agent ExecStart)
# A contain directory of its own, so that this agent never reconciles the
# pins of another agent on this machine.
# shellcheck disable=SC2086
setpriv --bounding-set="-all$setpriv_caps" --inh-caps=-all --no-new-privs \
    -- $agent_cmd --collector "http://127.0.0.1:$port" --contain-dir "$contain_dir" \
    >"$work/agent.log" 2>&1 &
pids+=($!)
sleep 0.5
kill -0 "${pids[1]}" 2>/dev/null || { cat "$work/agent.log" >&2; fail "the agent exited"; }
say "agent: pid ${pids[1]} with $caps (CapEff $(awk '/^CapEff/ {print $2}' "/proc/${pids[1]}/status"))"

# 6. What the CLI sees. A process of another user, started now, must be
#    reported with libc6 mapped: that takes the capabilities (maps of
#    another uid) and the agent's eBPF exec sensor or its rescan.
setpriv --reuid nobody --regid nogroup --clear-groups /usr/bin/sleep 300 &
pids+=($!)
sleeper=$!
cli() { local verb=$1; shift; /usr/bin/patchgap "$verb" --collector "127.0.0.1:$port" "$@"; }
found=
for _ in $(seq 150); do
    if cli query libc6 -o json 2>/dev/null | grep -q "\"pid\": *$sleeper\b"; then found=1; break; fi
    sleep 0.2
done
[ -n "$found" ] || { cat "$work/agent.log" >&2; cli query libc6 >&2 || true; fail "the sleeper (pid $sleeper, user nobody) is not reported with libc6"; }
cli hosts -o json >"$work/hosts.json"
grep -q "\"$(hostname)\"" "$work/hosts.json" || { cat "$work/hosts.json" >&2; fail "this host is not listed"; }
# eBPF on and containment offered, under the unit's capabilities only.
/usr/bin/python3 - "$work/hosts.json" "$(hostname)" <<'PY' || { cat "$work/agent.log" >&2; fail "eBPF or containment is off under the unit's capabilities"; }
import json, sys
host = next(h for h in json.load(open(sys.argv[1]))["hosts"] if h["host"] == sys.argv[2])
print(f"host {host['host']}: ebpf={host['ebpf']} {host['ebpf_reason']!r} contain={host['contain']} {host['contain_reason']!r} denied={host['last_scan']['denied']} of {host['last_scan']['processes']}", file=sys.stderr)
sys.exit(0 if host["ebpf"] and host["contain"] else 1)
PY
grep -qi 'ebpf.*off\|missing capab\|Operation not permitted\|EPERM' "$work/agent.log" && { cat "$work/agent.log" >&2; fail "the agent logged a refusal"; }
say "CLI: this host, eBPF on, the sleeper of user nobody with libc6 mapped"
cli query libc6 | tail -n 2 >&2

# Stop as the units do (KillSignal=SIGINT): both daemons must exit 0.
kill "$sleeper"; wait "$sleeper" 2>/dev/null || true
kill -INT "${pids[1]}"; wait "${pids[1]}" || fail "the agent exited $? on SIGINT"
kill -INT "${pids[0]}"; wait "${pids[0]}" || fail "the collector exited $? on SIGINT"
pids=()
say "SIGINT: both daemons exited 0"

# 7. Purge: everything but the data, and the note that says where it is.
dpkg -P patchgap >"$work/purge" 2>&1 || { cat "$work/purge" >&2; fail "dpkg -P"; }
grep -q 'kept in /var/lib/patchgap-collector' "$work/purge" || { cat "$work/purge" >&2; fail "purge does not say where the data is"; }
for f in /usr/bin/patchgap-agent /usr/bin/patchgap-collector /usr/bin/patchgap /etc/patchgap \
    /lib/systemd/system/patchgap-agent.service /lib/systemd/system/patchgap-collector.service \
    /var/lib/patchgap-agent; do
    [ ! -e "$f" ] || fail "$f is left after purge"
done
[ -n "$(ls -A /var/lib/patchgap-collector)" ] || fail "purge deleted the collector's data"
dpkg-query -W patchgap >/dev/null 2>&1 && fail "dpkg still knows patchgap after purge"
say "purge: removed all but /var/lib/patchgap-collector ($(ls /var/lib/patchgap-collector | tr '\n' ' '))"
