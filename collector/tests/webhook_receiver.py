"""A Standard Webhooks receiver written apart from patchgap's code.

It verifies every request with the specification's own Python package
(`standardwebhooks.Webhook(secret).verify(body, headers)`) and answers per
a script of statuses (the last one repeats). Each request is one JSON line
in the log: its webhook-id, timestamp, signature, whether it verified, the
status answered and the body.

    python webhook_receiver.py SECRET LOG 500,500,200 [CERT KEY]

prints the port it listens on (127.0.0.1) as its first line. With CERT and
KEY (PEM) it serves HTTPS.
"""

import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

secret, log_path, script = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
wh = Webhook(secret)
lock = threading.Lock()
count = [0]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            wh.verify(body, headers)
            verified, why = True, ""
        except Exception as e:  # any failure is recorded, and answered 401
            verified, why = False, repr(e)
        with lock:
            n = count[0]
            count[0] += 1
            status = int(script[min(n, len(script) - 1)]) if verified else 401
            with open(log_path, "a") as f:
                f.write(json.dumps({
                    "n": n,
                    "webhook_id": headers.get("webhook-id"),
                    "timestamp": headers.get("webhook-timestamp"),
                    "signature": headers.get("webhook-signature"),
                    "verified": verified,
                    "why": why,
                    "status": status,
                    "body": body.decode(),
                }) + "\n")
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if len(sys.argv) > 5:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(sys.argv[4], sys.argv[5])
    server.socket = tls.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
