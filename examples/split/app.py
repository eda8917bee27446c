"""The application both backends run: says which backend answered."""
import json
import os


def application(environ, start_response):
    body = json.dumps({
        "backend": os.environ.get("BACKEND", "?"),
        "pid": os.getpid(),
        "path": environ["PATH_INFO"],
        "client": environ["REMOTE_ADDR"],
    }).encode() + b"\n"
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
