/* udp_ports (see udp_ports.h) with its maps in the legacy section "maps". */
#include "bpf_defs.h"
#include "classic.h"
#include "counts.h"

struct bpf_map_def SEC("maps") ports = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct counts),
	.max_entries = 64,
};

struct bpf_map_def SEC("maps") jump = {
	.type = BPF_MAP_TYPE_PROG_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 4,
};

#include "udp_ports.h"
