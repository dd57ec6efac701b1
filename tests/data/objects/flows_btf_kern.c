/*
 * flows_kern.c with its maps declared BTF-style in section ".maps" (built with -g):
 * the same programs, the same counts. "socket/0" counts every frame in runs[0] and
 * tail-calls index COUNT_UDP of jmp_table for an IPv4 UDP frame; "socket/1" counts its
 * runs in runs[1] and packets and bytes per destination address and port in flows.
 * The prog array declares no programs of its own: the loader's request fills it.
 */
#include "common.h"

#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

#define COUNT_UDP 1

struct flow_key {
	unsigned int daddr;
	unsigned short dport;
	unsigned short pad;
};

struct flow_stats {
	unsigned long long packets;
	unsigned long long bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_stats);
	__uint(max_entries, 64);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(unsigned int));
	__uint(value_size, sizeof(unsigned int));
	__uint(max_entries, 4);
} jmp_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, unsigned int);
	__type(value, unsigned long long);
	__uint(max_entries, 2);
} runs SEC(".maps");

static __attribute__((always_inline)) void count_run(unsigned int index)
{
	unsigned long long *value = bpf_map_lookup_elem(&runs, &index);

	if (value)
		__sync_fetch_and_add(value, 1);
}

SEC("socket/0")
int dispatch(struct __sk_buff *skb)
{
	count_run(0);
	if (load_half(skb, 12) == ETH_P_IP && load_byte(skb, ETH_HLEN + 9) == IPPROTO_UDP)
		bpf_tail_call(skb, &jmp_table, COUNT_UDP);
	return 0;
}

SEC("socket/1")
int count_udp(struct __sk_buff *skb)
{
	struct flow_key key = {};
	struct flow_stats *stats;
	unsigned int ihl;

	count_run(1);
	ihl = (load_byte(skb, ETH_HLEN) & 0x0f) * 4;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 16, &key.daddr, sizeof(key.daddr)) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + ihl + 2, &key.dport, sizeof(key.dport)))
		return 0;

	stats = bpf_map_lookup_elem(&flows, &key);
	if (!stats) {
		struct flow_stats first = {};

		bpf_map_update_elem(&flows, &key, &first, BPF_NOEXIST);
		stats = bpf_map_lookup_elem(&flows, &key);
		if (!stats)
			return 0;
	}
	__sync_fetch_and_add(&stats->packets, 1);
	__sync_fetch_and_add(&stats->bytes, skb->len);
	return 0;
}

char _license[] SEC("license") = "GPL";
