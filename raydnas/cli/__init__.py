"""The command line: ``raydnas search|validate|sweep|evaluate|reduce|wait-head``. Each command
module only parses and prints; the work is the library's. ``main.main`` is the entry point."""
