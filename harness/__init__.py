"""A build-and-test harness for Linux kernel BPF samples, run in real VMs."""
