/* udp_ports (see udp_ports.h) with BTF-defined maps in section ".maps". */
#include "bpf_defs.h"
#include "btf.h"
#include "counts.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct counts);
	__uint(max_entries, 64);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 4);
} jump SEC(".maps");

#include "udp_ports.h"
