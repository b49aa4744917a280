"""Everything the daemon listens on, each given the router (core/router.py) and, for
the commands that act on the process, an Admin (commands.py), never the daemon:
control.py (the Unix control socket: shim requests and JSON commands), commands.py
(one handler per JSON operation), tcpcontrol.py (the same over loopback TCP, for
Windows programs), relay.py (the relay listeners and relay.sock), frontdoor.py (the
SOCKS server), with admission.py, socktable.py and fdpass.py beneath them."""
