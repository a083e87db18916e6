"""An SMTP server for rollbackd's email tests, built on Debian's python3-aiosmtpd.

Run with Debian's interpreter: /usr/bin/python3 tests/support/smtp_sink.py PORT OUT_DIR
It listens on 127.0.0.1:PORT and writes each message it accepts, parsed by Python's email
package, as OUT_DIR/NNNN.json: envelope, headers (decoded), and every MIME leaf part. With the
environment variables SMTP_SINK_USER and SMTP_SINK_PASSWORD set, it requires AUTH (PLAIN or
LOGIN, allowed without TLS on loopback) and refuses mail from an unauthenticated session.
It prints "ready" once it accepts connections, and runs until it is killed.
"""

import email
import json
import logging
import os
import sys
import threading
import warnings
from email import policy

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER = os.environ.get("SMTP_SINK_USER")
PASSWORD = os.environ.get("SMTP_SINK_PASSWORD")


class Sink:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        parts = []
        for part in msg.walk():
            if part.is_multipart():
                continue
            parts.append(
                {
                    "content_type": part.get_content_type(),
                    "charset": part.get_content_charset(),
                    "transfer_encoding": part.get("Content-Transfer-Encoding"),
                    "text": part.get_content(),
                }
            )
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "authenticated": bool(session.authenticated),
            "content_type": msg.get_content_type(),
            "headers": {k: str(v) for k, v in msg.items()},
            "parts": parts,
        }
        with self.lock:
            self.count += 1
            path = os.path.join(self.out_dir, "%04d.json" % self.count)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.rename(tmp, path)
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == USER
        and auth_data.password.decode() == PASSWORD
    )
    return AuthResult(success=ok, handled=False)


def main():
    # AUTH without TLS is deliberate here (loopback only); keep the test output quiet.
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    port = int(sys.argv[1])
    out_dir = sys.argv[2]
    kwargs = {}
    if USER is not None and PASSWORD is not None:
        kwargs = {
            "authenticator": authenticator,
            "auth_required": True,
            "auth_require_tls": False,
        }
    controller = Controller(Sink(out_dir), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
