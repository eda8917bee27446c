"""WSGI app for bench/soak.sh: a GET answers the worker's pid, a POST its
body back (so a mixed-up answer shows as a wrong length to wrk's script)."""
import os


def app(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
    else:
        body = ("ok %d" % os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]
