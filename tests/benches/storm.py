"""Load for the overhead bench: exec and connect storms on loopback.

usage: storm.py SECONDS EXEC_RATE CONNECT_RATE   (a rate of 0 means as fast as possible)
Prints one JSON line: {"execs": N, "connects": M, "seconds": S}.
"""
import json
import socket
import subprocess
import sys
import threading
import time

seconds, exec_rate, connect_rate = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4096)
port = listener.getsockname()[1]


def accept():
    while True:
        conn, _ = listener.accept()
        conn.close()


def paced(rate, t0, n):
    if rate > 0:
        delay = t0 + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def execs(out):
    t0, n = time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        subprocess.run(["/bin/true"])
        n += 1
        paced(exec_rate, t0, n)
    out["execs"] = n


def connects(out):
    t0, n = time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        s = socket.create_connection(("127.0.0.1", port))
        s.close()
        n += 1
        paced(connect_rate, t0, n)
    out["connects"] = n


threading.Thread(target=accept, daemon=True).start()
out = {"execs": 0, "connects": 0, "seconds": seconds}
threads = []
if exec_rate >= 0:
    threads.append(threading.Thread(target=execs, args=(out,)))
if connect_rate >= 0:
    threads.append(threading.Thread(target=connects, args=(out,)))
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(out))
