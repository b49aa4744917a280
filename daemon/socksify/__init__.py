"""socksify: run unmodified programs through a chain of SOCKS proxies."""

__version__ = "0.1.0"
