// SPDX-License-Identifier: GPL-2.0
/*
 * sockex2: a socket filter that dissects every frame its socket sees into a
 * flow and counts packets and bytes per flow destination.
 *
 * Its hash map is a struct bpf_map_def in the legacy "maps" section; the program
 * itself, shared with samples/sockex2-btf, is in samples/include/sockex2_programs.h.
 */
#include "../include/socket_filter.h"
#include "../include/flow_dissect.h"

struct bpf_map_def SEC("maps") hash_map = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct counters),
	.max_entries = 1024,
};

#include "../include/sockex2_programs.h"

char _license[] SEC("license") = "GPL";
