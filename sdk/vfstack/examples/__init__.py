"""Example applications on the vfstack SDK, each an epoll loop in the style
of mTCP's Listing 1 (NSDI'14 §4.3). Each also runs on Linux kernel sockets
with `--kernel`: the same code path with Python's `socket` and `select.epoll`,
which is how bench/ compares the two stacks.

    python -m vfstack.examples.http_server --control unix:///run/vfstack/vf0.sock --port 8080
    python -m vfstack.examples.echo_server --control unix:///run/vfstack/vf1.sock --port 7007
    python -m vfstack.examples.loadgen --control URL --url http://198.18.0.1:8080/ -n 1000 -c 10
"""
