-- wrk script for bench/wsgi.sh: POST a 10 KiB body (wrk adds Content-Length).
wrk.method = "POST"
wrk.body = string.rep("0123456789abcdef", 640)
wrk.headers["Content-Type"] = "application/octet-stream"
