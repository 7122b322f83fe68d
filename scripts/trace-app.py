#!/usr/bin/env python3
"""A demo app for the tracing walkthrough (README, "See a request's trace in Jaeger").

It answers GET with its name and, with --next, first calls the next hop through its own
sidecar (--proxy, explicit mode), copying the trace headers of the request it serves, as
every app in a mesh must for its hops to join one trace and one request id.
"""
import argparse
import http.server
import json
import urllib.request

TRACE_HEADERS = [
    "x-request-id", "traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid",
    "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3", "x-ot-span-context",
    "x-cloud-trace-context", "grpc-trace-bin",
]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="what the app answers")
    parser.add_argument("--listen", required=True, help="IP:port to serve on")
    parser.add_argument("--next", help="URL of the next hop, e.g. http://ratings:9080/")
    parser.add_argument("--proxy", help="the app's sidecar, e.g. 127.0.20.2:15001")
    args = parser.parse_args()
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://{args.proxy}"} if args.proxy else {})
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = {"app": args.name}
            if args.next:
                request = urllib.request.Request(args.next)
                for name in TRACE_HEADERS:
                    if self.headers.get(name) is not None:
                        request.add_header(name, self.headers[name])
                with opener.open(request, timeout=10) as response:
                    body["next"] = json.loads(response.read())
            data = json.dumps(body).encode() + b"\n"
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_):
            pass

    host, port = args.listen.rsplit(":", 1)
    http.server.ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
