"""`python3 -m bench`: mTCP's evaluation against Linux kernel TCP (bench.evaluation).

The single benchmarks stay runnable on their own: `python3 -m bench.tcp`,
`bench.icmp_echo`, `bench.packet_io`, `bench.rings`, `bench.control_overhead`,
`bench.isolation`, `bench.loss`, `bench.soak`, `bench.relay`, `bench.metrics`,
`bench.workers`.
"""

import sys

from bench.evaluation import main

sys.exit(main())
