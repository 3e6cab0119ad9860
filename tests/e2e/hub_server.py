"""A tiny stand-in for the Hugging Face Hub on loopback, for run/download_hf_assets.sh's test.

    hub_server.py ROOT PORT_FILE [LIFETIME_SECONDS]

Serves ROOT/<org>/<name>/... as the repository <org>/<name>:
  GET /api/models/<org>/<name>               {"siblings": [{"rfilename": ...}, ...]}
  GET /<org>/<name>/resolve/main/<file>      the file, with Range requests (206) for resuming
A repository with a file ".token" is gated: requests need "Authorization: Bearer <its text>",
else 401. A file "<file>.cut" makes the first download of <file> send half of it and then drop
the connection (a network failure to resume from). Missing repositories and files get 404.
Binds 127.0.0.1 on a free port, writes the port to PORT_FILE, logs each request to stderr, and
exits by itself after LIFETIME_SECONDS (default 120).
"""
import http.server
import json
import os
import sys
import threading

ROOT = os.path.abspath(sys.argv[1])
cut_done = set()


class Hub(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("hub: %s %s\n" % (fmt % args, self.headers.get("Range", "")))

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def repo_dir(self, org, name):
        path = os.path.join(ROOT, org, name)
        return path if os.path.isdir(path) else None

    def authorized(self, repo):
        token_file = os.path.join(repo, ".token")
        if not os.path.exists(token_file):
            return True
        expected = "Bearer " + open(token_file).read().strip()
        return self.headers.get("Authorization") == expected

    def do_GET(self):
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        if len(parts) == 4 and parts[:2] == ["api", "models"]:
            repo = self.repo_dir(parts[2], parts[3])
            if repo is None:
                return self.send_json(404, {"error": "Repository not found"})
            if not self.authorized(repo):
                return self.send_json(401, {"error": "Invalid credentials"})
            files = sorted(os.path.relpath(os.path.join(d, f), repo) for d, _, fs in os.walk(repo) for f in fs
                           if not f.startswith(".") and not f.endswith(".cut"))
            return self.send_json(200, {"id": f"{parts[2]}/{parts[3]}", "siblings": [{"rfilename": f} for f in files]})
        if len(parts) >= 5 and parts[2:4] == ["resolve", "main"]:
            repo = self.repo_dir(parts[0], parts[1])
            if repo is None:
                return self.send_json(404, {"error": "Repository not found"})
            if not self.authorized(repo):
                return self.send_json(401, {"error": "Invalid credentials"})
            path = os.path.join(repo, *parts[4:])
            if not os.path.isfile(path) or os.path.basename(path).startswith("."):
                return self.send_json(404, {"error": "Entry not found"})
            return self.send_file(path)
        self.send_json(404, {"error": "not found"})

    def send_file(self, path):
        data = open(path, "rb").read()
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes="):-1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        body = data[start:]
        if os.path.exists(path + ".cut") and path not in cut_done:
            cut_done.add(path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    lifetime = float(sys.argv[3]) if len(sys.argv) > 3 else 120.0
    threading.Timer(lifetime, server.shutdown).start()
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, sys.argv[2])
    server.serve_forever()


if __name__ == "__main__":
    main()
