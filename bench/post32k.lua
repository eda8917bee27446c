-- wrk script for bench/ab.sh: POST a 32 KiB body (wrk adds Content-Length),
-- past the request-buffering memory limit (16 KiB): a temporary file.
wrk.method = "POST"
wrk.body = string.rep("0123456789abcdef", 2048)
wrk.headers["Content-Type"] = "application/octet-stream"
