"""End-to-end tests in the network-namespace lab (tests/lab.py). A package, so its
module names never clash with tests/unit/ ones."""
