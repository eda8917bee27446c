#!/usr/bin/env python3
"""A CGI script: one process per request (RFC 3875)."""
import os

print("Content-Type: text/plain; charset=utf-8")
print()
print(f"Hello from CGI, process {os.getpid()}.")
print(f"QUERY_STRING={os.environ.get('QUERY_STRING', '')}")
