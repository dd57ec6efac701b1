// SPDX-License-Identifier: GPL-2.0
/*
 * sockex2-btf: a socket filter that dissects every frame its socket sees into
 * a flow and counts packets and bytes per flow destination.
 *
 * The program of samples/sockex2 with its hash map BTF-defined (a struct in
 * section ".maps", its key and value types in the object's BTF) instead of a
 * struct bpf_map_def in "maps"; the program itself, the same for both, is in
 * samples/include/sockex2_programs.h.
 */
#include "../include/socket_filter.h"
#include "../include/flow_dissect.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct counters);
	__uint(max_entries, 1024);
} hash_map SEC(".maps");

#include "../include/sockex2_programs.h"

char _license[] SEC("license") = "GPL";
