"""WSGI apps for bench/wsgi.sh: the same code runs on every server.

    bench_app:app     hello world (13 bytes)
    bench_app:get10k  a fixed 10 KiB body
    bench_app:echo    POST echo: reads wsgi.input (CONTENT_LENGTH bytes), returns it
"""

HELLO = b"Hello, world!"
BODY_10K = b"0123456789abcdef" * 640  # 10240 bytes


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


def get10k(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", "10240")])
    return [BODY_10K]


def echo(environ, start_response):
    # read(n) with the declared length: granian's read() without a size
    # raises OverflowError on some requests, and PEP 3333 only promises read(n).
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
    return [body]
