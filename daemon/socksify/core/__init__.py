"""The daemon's core, below the listeners and above the chain engine: the router
(router.py) decides and opens each connection; sessions.py holds the `socksify`
commands' sessions with their selectors and pools; table.py the live connections,
their relay tokens and PEERNAME; records.py the plain records; carry.py moves the
bytes of a relayed connection."""
