#!/usr/bin/env bash
# The HA reference deployment (packaging/ha/README.md), brought up on
# loopback in a temporary directory and failed over under ingest:
#
#   etcd x3 -> Patroni x2 (PostgreSQL 15, synchronous replication)
#   -> HAProxy (the primary, by Patroni's /primary check)
#   -> patchgap-collector x2 (--store postgres://...@haproxy)
#   <- fleet-sim (HOSTS simulated agents over both collectors)
#
# It SIGKILLs the primary's postmaster while the fleet streams, then checks
# that no acked message is lost (fleet-sim's own count of Welcomes that knew
# less than was acked, and its --acked report against the database), that
# every agent ingests again, and that `patchgap hosts` and `patchgap query`
# answer again. It prints the time until ingest and queries resume and
# exits non-zero when anything acked is lost or a resumption takes longer
# than its bound.
#
# Runs as root (CI does, after the README's test command; not part of
# `cargo test`). Installs Patroni, etcd and HAProxy from Debian when they are
# missing, without letting their packaged services start. Every process it
# starts and its temporary directory go away on exit, failed or not.
#
#   packaging/ha/test.sh                   # 50 hosts, a delta each every 10 s
#   HOSTS=200 KEEP=1 packaging/ha/test.sh  # KEEP=1 keeps the logs' directory
set -euo pipefail
cd "$(dirname "$0")/../.."

HOSTS=${HOSTS:-50}
# A delta per host this often: 50 hosts at 10 s is 5 commits a second
# through synchronous replication, what the debug collectors keep up with
# on a busy 2-core machine (README); raise both on a real one.
DELTA_EVERY=${DELTA_EVERY:-10s}
# The bounds the script holds the failover to (seconds from the SIGKILL).
INGEST_BOUND_S=${INGEST_BOUND_S:-30}
QUERY_BOUND_S=${QUERY_BOUND_S:-30}
PG_BIN=/usr/lib/postgresql/15/bin

say() { echo "ha: $*"; }
fail() { echo "ha: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (PostgreSQL runs as the postgres user)"

# --- What it needs from Debian -------------------------------------------
need=()
command -v patroni >/dev/null || need+=(patroni python3-psycopg2 python3-etcd)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v haproxy >/dev/null || need+=(haproxy)
[ -x "$PG_BIN/initdb" ] || need+=(postgresql-15)
command -v psql >/dev/null || need+=(postgresql-client-15)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    # The packages' own services (etcd, haproxy, a default cluster) must not
    # start: this script runs its own. policy-rc.d is how Debian says so.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    [ "$made_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
fi

# Debug builds: the ones `cargo test` already built in CI (no second,
# release, compile of the workspace), and the failover times measured here
# are Patroni's, etcd's and HAProxy's, not the collector's CPU.
say "building the collector, the CLI and fleet-sim (debug)"
cargo build --locked -q -p patchgap-collector -p cli -p patchgap-tests \
    --bin patchgap-collector --bin patchgap --bin fleet-sim
BIN=$PWD/target/debug

# --- A temporary directory, free ports, and cleanup -----------------------
TMP=$(mktemp -d /tmp/patchgap-ha.XXXXXX)
chmod 755 "$TMP"
PIDS=()
FLEET_PID=
finish() {
    local rc=$?
    set +e
    if [ "$rc" != 0 ]; then
        for log in "$TMP"/*.log; do
            [ -f "$log" ] || continue
            echo "---- $(basename "$log") (last 15 lines)" >&2
            tail -n 15 "$log" >&2
        done
    fi
    # Newest first: the fleet, collectors, HAProxy, Patroni, then etcd.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM -- "-${PIDS[i]}" 2>/dev/null
    done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.2
    done
    for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null; done
    # A postmaster Patroni started outlives it when Patroni is killed.
    for data in "$TMP"/pg*/data; do
        [ -f "$data/postmaster.pid" ] || continue
        local pm
        pm=$(head -n 1 "$data/postmaster.pid")
        kill -KILL "$pm" 2>/dev/null
    done
    sleep 0.5
    if [ "${KEEP:-0}" = 1 ]; then
        echo "ha: kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

# All ports at once, held together so they differ.
read -r -a PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(14)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')
ETCD_CLIENT=("${PORT[0]}" "${PORT[1]}" "${PORT[2]}")
ETCD_PEER=("${PORT[3]}" "${PORT[4]}" "${PORT[5]}")
PG_PORT=("${PORT[6]}" "${PORT[7]}")
REST_PORT=("${PORT[8]}" "${PORT[9]}")
HAPROXY_PORT=${PORT[10]}
HAPROXY_STATS=${PORT[11]}
COLLECTOR_PORT=("${PORT[12]}" "${PORT[13]}")

# Starts "$@" in a process group of its own (so cleanup reaches its
# children), output to $TMP/$1.log; the group id lands in PIDS.
start() {
    local name=$1
    shift
    setsid "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
}

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
    local secs=$1
    shift
    local until=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$until" ] || return 1
        sleep 0.2
    done
}

now_ms() { date +%s%3N; }

# --- etcd: three members ---------------------------------------------------
cluster=""
for i in 0 1 2; do
    cluster+="${cluster:+,}e$i=http://127.0.0.1:${ETCD_PEER[i]}"
done
ENDPOINTS=""
for i in 0 1 2; do
    ENDPOINTS+="${ENDPOINTS:+,}127.0.0.1:${ETCD_CLIENT[i]}"
    start "etcd$i" etcd --name "e$i" --data-dir "$TMP/etcd$i" \
        --listen-client-urls "http://127.0.0.1:${ETCD_CLIENT[i]}" \
        --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT[i]}" \
        --listen-peer-urls "http://127.0.0.1:${ETCD_PEER[i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER[i]}" \
        --initial-cluster "$cluster" --initial-cluster-token patchgap-ha \
        --initial-cluster-state new
done
wait_for 30 env ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" endpoint health \
    || fail "etcd did not become healthy"
say "etcd: 3 members on 127.0.0.1:${ETCD_CLIENT[*]}"

# --- PostgreSQL 15 under Patroni: two members ------------------------------
for i in 0 1; do
    dir=$TMP/pg$i
    mkdir -p "$dir"
    chown postgres:postgres "$dir"
    chmod 700 "$dir"
    cat >"$TMP/patroni$i.yml" <<EOF
scope: patchgap-ha
namespace: /patchgap/
name: pg$i
restapi:
  listen: 127.0.0.1:${REST_PORT[i]}
  connect_address: 127.0.0.1:${REST_PORT[i]}
etcd3:
  hosts: $ENDPOINTS
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 1
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    # A crashed primary fails over at once instead of being restarted in
    # place (the default waits 300 s for it).
    master_start_timeout: 0
    # A commit returns only once the standby has it: an acked message
    # survives the primary's death (README: the trade-off).
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_log_hints: "on"
        max_connections: 200
  initdb:
    - encoding: UTF8
    - data-checksums
postgresql:
  listen: 127.0.0.1:${PG_PORT[i]}
  connect_address: 127.0.0.1:${PG_PORT[i]}
  data_dir: $dir/data
  bin_dir: $PG_BIN
  pgpass: $dir/pgpass
  authentication:
    superuser:
      username: postgres
      password: ha-test-superuser
    replication:
      username: replicator
      password: ha-test-replicator
  parameters:
    unix_socket_directories: $dir
  # Loopback only, in a throwaway directory; a real deployment uses
  # scram-sha-256 and TLS (README).
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication replicator 127.0.0.1/32 trust
EOF
    chown postgres:postgres "$TMP/patroni$i.yml"
    # From a directory postgres can enter: Patroni starts PostgreSQL through
    # Python's multiprocessing "spawn", whose child chdirs to the parent's
    # directory. Started from a clone in a 0700 directory (CI's mktemp -d),
    # that failed with EACCES, no postmaster ever came up, and Patroni said
    # "bootstrap in progress" until the script gave up.
    pushd "$TMP" >/dev/null
    start "patroni$i" runuser -u postgres -- patroni "$TMP/patroni$i.yml"
    popd >/dev/null
done

# Patroni's REST API: /primary answers 200 on the leader, /sync on the
# synchronous standby.
rest() { curl -fs -o /dev/null "http://127.0.0.1:$1$2"; }
primary_member() {
    for i in 0 1; do
        if rest "${REST_PORT[i]}" /primary; then
            echo "$i"
            return 0
        fi
    done
    return 1
}
both_ready() {
    local p
    p=$(primary_member) || return 1
    rest "${REST_PORT[1 - p]}" /sync
}
wait_for 120 both_ready || fail "Patroni did not bring up a primary and a synchronous standby"
PRIMARY=$(primary_member)
say "patroni: pg$PRIMARY primary on 127.0.0.1:${PG_PORT[PRIMARY]}, pg$((1 - PRIMARY)) synchronous standby on 127.0.0.1:${PG_PORT[1 - PRIMARY]}"

# --- HAProxy: the primary, whichever it is ---------------------------------
cat >"$TMP/haproxy.cfg" <<EOF
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s
listen postgres
    bind 127.0.0.1:$HAPROXY_PORT
    option httpchk OPTIONS /primary
    http-check expect status 200
    # Checked twice a second; a member that fails twice is down and its
    # sessions are cut, so clients reconnect to the new primary.
    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
    server pg0 127.0.0.1:${PG_PORT[0]} maxconn 200 check port ${REST_PORT[0]}
    server pg1 127.0.0.1:${PG_PORT[1]} maxconn 200 check port ${REST_PORT[1]}
listen stats
    mode http
    bind 127.0.0.1:$HAPROXY_STATS
    stats enable
    stats uri /
EOF
start haproxy haproxy -db -f "$TMP/haproxy.cfg"
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$HAPROXY_PORT" -U postgres)
# HAProxy takes every server for up until its checks say otherwise, so
# for its first second a connection may reach the standby, which answers
# a SELECT but refuses a write ("cannot execute CREATE DATABASE in a
# read-only transaction"). Wait until four connections in a row (round
# robin over two servers) land on the primary.
on_primary() {
    local i
    for i in 1 2 3 4; do
        [ "$("${PSQL[@]}" -d postgres -tAc 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] || return 1
    done
}
wait_for 30 on_primary || fail "HAProxy does not send every connection to the primary"
"${PSQL[@]}" -d postgres -c 'CREATE DATABASE patchgap'
say "haproxy: 127.0.0.1:$HAPROXY_PORT (stats http://127.0.0.1:$HAPROXY_STATS/)"

# --- Two collectors on the one database ------------------------------------
STORE="postgres://postgres@127.0.0.1:$HAPROXY_PORT/patchgap?connect_timeout=3"
COLLECTORS=""
for i in 0 1; do
    mkdir -p "$TMP/collector$i"
    start "collector$i" "$BIN/patchgap-collector" --listen "127.0.0.1:${COLLECTOR_PORT[i]}" \
        --data-dir "$TMP/collector$i" --store "$STORE"
    COLLECTORS+="${COLLECTORS:+,}http://127.0.0.1:${COLLECTOR_PORT[i]}"
done
for i in 0 1; do
    wait_for 60 "$BIN/patchgap" hosts --collector "http://127.0.0.1:${COLLECTOR_PORT[i]}" \
        || fail "collector $i does not answer"
done
say "collectors: $COLLECTORS"

# --- The fleet -------------------------------------------------------------
# Each simulated host replays a small real inventory: a few interpreters and
# daemons scanned in a PID namespace of their own (this machine's 1,000
# processes would make the first snapshots, not the failover, the subject:
# README). Everything in the namespace dies with its init, fleet-sim.
unshare --pid --fork --mount-proc sh -c '
    sleep 600 & sleep 600 & perl -e "sleep 600" &
    python3 -c "import time; time.sleep(600)" &
    node -e "setTimeout(() => {}, 600000)" &
    sleep 1; exec "$1" --record "$2"' sh "$BIN/fleet-sim" "$TMP/inventory.bin" >"$TMP/record.log"
say "$(cat "$TMP/record.log")"
start fleet "$BIN/fleet-sim" --hosts "$HOSTS" --collector "$COLLECTORS" \
    --hosts-per-connection 10 --delta-every "$DELTA_EVERY" \
    --inventory "$TMP/inventory.bin" --acked "$TMP/acked.txt"
FLEET_PID=${PIDS[-1]}
wait_for 300 grep -q "every host's first snapshot acked" "$TMP/fleet.log" \
    || fail "the fleet's first snapshots were not all acked"
say "$(grep "every host's first snapshot acked" "$TMP/fleet.log")"
q() { "${PSQL[@]}" -d patchgap -At -c "$1"; }
sleep 10
acks_before=$(q "SELECT sum(acked_seq) FROM host WHERE host_id LIKE 'fleet-sim-%'")
bytes_before=$(q "SELECT pg_database_size('patchgap')")
say "steady ingest: $acks_before messages stored before the failover"

# --- Kill the primary ------------------------------------------------------
PRIMARY=$(primary_member) || fail "no primary before the kill"
postmaster=$(head -n 1 "$TMP/pg$PRIMARY/data/postmaster.pid")
KILL_MS=$(now_ms)
kill -KILL "$postmaster"
kill -USR1 "$FLEET_PID"
say "SIGKILLed the primary's postmaster (pg$PRIMARY, pid $postmaster)"

# Queries: the first `patchgap hosts` that answers, each try bounded.
query_failed=0
until timeout 5 "$BIN/patchgap" hosts --collector "http://127.0.0.1:${COLLECTOR_PORT[0]}" >/dev/null 2>&1; do
    query_failed=$((query_failed + 1))
    [ $(($(now_ms) - KILL_MS)) -lt $((QUERY_BOUND_S * 1000 * 2)) ] || fail "queries did not answer again"
    sleep 0.1
done
QUERY_MS=$(($(now_ms) - KILL_MS))
NEW_PRIMARY=$(primary_member) || true
say "queries answer again after $QUERY_MS ms ($query_failed failed tries; primary now pg${NEW_PRIMARY:-?})"

# Ingest: fleet-sim marks the moment (SIGUSR1, sent right after the kill)
# and prints when the first message it sent after the mark is acked: a
# commit on the new primary.
resumed() {
    grep -m 1 "ingest resumed: acked at" "$TMP/fleet.log" | awk '{ print $6 }' | grep .
}
if wait_for $((INGEST_BOUND_S * 2)) resumed; then
    INGEST_MS=$(($(resumed) - KILL_MS))
else
    fail "ingest did not resume"
fi
say "ingest resumed after $INGEST_MS ms"

# Every agent reconnected and stored something after the failover.
all_back() {
    [ "$(q "SELECT count(*) FROM host WHERE host_id LIKE 'fleet-sim-%' AND last_seen_ms > $KILL_MS")" = "$HOSTS" ]
}
wait_for 60 all_back || fail "not every simulated agent reported after the failover: $(q "SELECT count(*) FROM host WHERE host_id LIKE 'fleet-sim-%' AND last_seen_ms > $KILL_MS")/$HOSTS"
BACK_MS=$(($(now_ms) - KILL_MS))
say "all $HOSTS agents stored a message after the failover (within $BACK_MS ms)"

# Queries through both collectors: the host list, and a package query.
for i in 0 1; do
    n=$("$BIN/patchgap" hosts --collector "http://127.0.0.1:${COLLECTOR_PORT[i]}" | grep -c 'sim-' || true)
    [ "$n" -ge "$HOSTS" ] || fail "collector $i lists $n of $HOSTS simulated hosts"
done
"$BIN/patchgap" query libc6 --collector "http://127.0.0.1:${COLLECTOR_PORT[1]}" >"$TMP/query.out" \
    || fail "patchgap query libc6 failed after the failover"
grep -q 'sim-' "$TMP/query.out" || fail "patchgap query libc6 names no simulated host"
say "patchgap hosts (both collectors) and patchgap query answer"

# More ingest on the new primary, then stop the fleet: it writes what was
# acked and exits non-zero when a Welcome knew less than was acked.
sleep 5
kill -TERM "$FLEET_PID"
fleet_rc=0
for _ in $(seq 100); do kill -0 "$FLEET_PID" 2>/dev/null || break; sleep 0.1; done
wait "$FLEET_PID" || fleet_rc=$?
grep -q "fleet-sim: stopped" "$TMP/fleet.log" || fail "fleet-sim did not report on SIGTERM"
say "$(grep "fleet-sim: stopped" "$TMP/fleet.log")"
[ "$fleet_rc" = 0 ] || fail "fleet-sim counted lost acked messages: $(grep -c LOST "$TMP/fleet.log")"

# Every host's last acked sequence number against the database.
q "SELECT host_id, session_id, acked_seq FROM host WHERE host_id LIKE 'fleet-sim-%'" \
    | tr '|' ' ' | sort >"$TMP/stored.txt"
sort "$TMP/acked.txt" >"$TMP/acked.sorted"
lost=$(join "$TMP/acked.sorted" "$TMP/stored.txt" | awk '
    $2 != $4 || $5 < $3 { print; n++ } END { exit 0 }' | tee "$TMP/lost.txt" | wc -l)
reported=$(wc -l <"$TMP/acked.sorted")
joined=$(join "$TMP/acked.sorted" "$TMP/stored.txt" | wc -l)
[ "$reported" = "$HOSTS" ] && [ "$joined" = "$HOSTS" ] \
    || fail "the acked report has $reported hosts, $joined of them in the database, of $HOSTS"
unacked=$(awk '$3 == 0' "$TMP/acked.sorted" | wc -l)
[ "$unacked" = 0 ] || fail "$unacked hosts had nothing acked"
[ "$lost" = 0 ] || fail "$lost hosts lost acked messages: $(head -n 3 "$TMP/lost.txt")"
acked_total=$(awk '{ s += $3 } END { print s }' "$TMP/acked.sorted")
say "nothing acked is lost: $HOSTS hosts, $acked_total acked messages, each host's last ack stored"

# What the database holds per host (the README's sizing uses it).
db_bytes=$(q "SELECT pg_database_size('patchgap')")
acks_after=$(q "SELECT sum(acked_seq) FROM host WHERE host_id LIKE 'fleet-sim-%'")
say "database: $db_bytes bytes for $HOSTS hosts; $((db_bytes - bytes_before)) bytes more for $((acks_after - acks_before)) more messages (deltas, and snapshots a failed stream sent again)"

echo "ha: RESULT hosts=$HOSTS delta_every=$DELTA_EVERY ingest_resumed_ms=$INGEST_MS queries_resumed_ms=$QUERY_MS all_agents_back_ms=$BACK_MS lost=0"
[ "$INGEST_MS" -le $((INGEST_BOUND_S * 1000)) ] || fail "ingest resumed after $INGEST_MS ms, over the ${INGEST_BOUND_S} s bound"
[ "$QUERY_MS" -le $((QUERY_BOUND_S * 1000)) ] || fail "queries resumed after $QUERY_MS ms, over the ${QUERY_BOUND_S} s bound"
say "PASS"
