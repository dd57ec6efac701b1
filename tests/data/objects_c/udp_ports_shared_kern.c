/*
 * udp_ports (see udp_ports.h) with both programs in one section, SEC("socket"),
 * as libbpf allows and the kernel's own sockex3 has them from 6.12: a loader
 * names each by its function (socket#entry, socket#count_udp). The prog array
 * jump is filled by the object itself: its static initialiser puts count_udp
 * at index 0 (an R_BPF_64_ABS64 relocation in .rel.maps), so no --prog-array
 * is needed for ports to fill.
 */
#include "bpf_defs.h"
#include "btf.h"
#include "counts.h"

#define ENTRY_SECTION "socket"
#define COUNT_SECTION "socket"
#define __array(name, type) typeof(type) *name[]

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct counts);
	__uint(max_entries, 64);
} ports SEC(".maps");

int count_udp(struct __sk_buff *skb);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(max_entries, 4);
	__array(values, int (void *));
} jump SEC(".maps") = {
	.values = { [0] = (void *)&count_udp },
};

#include "udp_ports.h"
