// SPDX-License-Identifier: GPL-2.0
/*
 * sockex3: a flow parser split over several socket filters chained by tail
 * calls, counting packets and bytes per flow (src, dst, sport, dport, IP
 * protocol) in a hash map.
 *
 * Its prog array and hash map are struct bpf_map_def in the legacy "maps"
 * section; the programs, shared with samples/sockex3-btf, are in
 * samples/include/sockex3_programs.h.
 */
#include "../include/socket_filter.h"
#include "../include/flow_dissect.h"
#include "../include/sockex3.h"

struct bpf_map_def SEC("maps") jmp_table = {
	.type = BPF_MAP_TYPE_PROG_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 8,
};

struct bpf_map_def SEC("maps") flow_map = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct flow_key),
	.value_size = sizeof(struct counters),
	.max_entries = 1024,
};

#include "../include/sockex3_programs.h"

char _license[] SEC("license") = "GPL";
