"""The isolation path: a program in its own network namespace whose only way out is the daemon."""
