"""Another user's listener on a dead socksify daemon's TCP control port (run as that
user): it answers whatever a client sends the way a forger would, and prints, one
JSON line per connection, every byte it received.

    python3 squatter.py PORT

A client of the old protocol sends the control file's key, then a request: the
squatter answers a v1 request with DIRECT (so the program would connect around the
chain) and a JSON request with a made-up status. A client of the current protocol sends
a hello (SKTC, nonce): the squatter can only guess the 48-byte answer. It prints
LISTENING once bound. Standard library only."""

import json
import socket
import sys

DIRECT = b"SKFY\x01\x01" + bytes(26)
STATUS = b'{"ok": true, "pid": 4242, "squatter": true, "sessions": 0}\n'


def serve(conn: socket.socket) -> bytes:
    conn.settimeout(3)
    got = b""
    try:
        while len(got) < 20:
            chunk = conn.recv(4096)
            if not chunk:
                return got
            got += chunk
        if got.startswith(b"SKTC"):
            conn.sendall(bytes(range(48)))          # a guess at nd + the daemon's MAC
        else:
            while got[16:17] == b"{" and b"\n" not in got or \
                    got[16:20] == b"SKFY" and len(got) < 16 + 48:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                got += chunk
            conn.sendall(STATUS if got[16:17] == b"{" else DIRECT)
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    return got


def main() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(sys.argv[1])))
    listener.listen(8)
    print("LISTENING", flush=True)
    while True:
        conn, _ = listener.accept()
        with conn:
            got = serve(conn)
        print(json.dumps({"got": got.hex()}), flush=True)


if __name__ == "__main__":
    main()
