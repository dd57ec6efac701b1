// SPDX-License-Identifier: GPL-2.0
/*
 * sockex3-btf: a flow parser split over several socket filters chained by
 * tail calls, counting packets and bytes per flow (src, dst, sport, dport, IP
 * protocol) in a hash map.
 *
 * The programs of samples/sockex3 with both maps BTF-defined in section
 * ".maps": jmp_table, the prog array, by its key and value sizes (the loader
 * fills it from sample.py's ProgArray; nothing initialises it here), and
 * flow_map by its key and value types. The programs, the same for both, are in
 * samples/include/sockex3_programs.h.
 */
#include "../include/socket_filter.h"
#include "../include/flow_dissect.h"
#include "../include/sockex3.h"

/*
 * Sizes, not types: a prog array's values are program fds as the loader writes
 * them. It is left empty here; the loader fills it from sample.py's ProgArray.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 8);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} jmp_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct counters);
	__uint(max_entries, 1024);
} flow_map SEC(".maps");

#include "../include/sockex3_programs.h"

char _license[] SEC("license") = "GPL";
