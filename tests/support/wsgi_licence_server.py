"""A licence server as a Python stdlib WSGI application (wsgiref), for the
end-to-end tests: it answers every request with a JSON object of what the
application sees -- every HTTP_* variable of the WSGI environ, the path,
the query and the body (hex) -- so a test can check what a CGI/WSGI licence
server behind the gate would read. wsgiref maps header names the CGI way:
`x_fpgen_content_key`, `X-FPGEN-CONTENT-KEY` and `x-fpgen-content-key` all
become HTTP_X_FPGEN_CONTENT_KEY, and repeats are joined with commas.

Usage: python3 wsgi_licence_server.py  (prints the port, then serves on
127.0.0.1 until killed)
"""

import json
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server


def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    seen = {
        "http": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
        "path": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""),
        "content_type": environ.get("CONTENT_TYPE", ""),
        "body_hex": body.hex(),
    }
    out = json.dumps(seen, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def main():
    server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
