"""The example site's WSGI app: everything under / that is not a file."""

import html
import json
import os


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/api/time":
        import time

        body = json.dumps({"time": time.time(), "pid": os.getpid()}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/hello":
        name = environ.get("QUERY_STRING", "").partition("name=")[2] or "world"
        body = f"<p>Hello, {html.escape(name)}, from a WSGI app.</p>".encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
    return [b"Not found: no file and no view for this path.\n"]
