/*
 * UDP flows per destination, counted through a tail call.
 *
 * "socket/0" (attached) counts every frame in runs[0] and, for an IPv4 UDP
 * frame, tail-calls index COUNT_UDP of jmp_table. "socket/1" (loaded only,
 * reached through the prog array) counts its runs in runs[1] and adds the frame
 * to flows under its destination address and port, both kept in network order
 * as the packet holds them. A loader that puts socket/1 at another index, or
 * does not fill the prog array, leaves flows empty.
 */
#include "common.h"

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

struct bpf_map_def SEC("maps") flows = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct flow_key),
	.value_size = sizeof(struct flow_stats),
	.max_entries = 64,
};

struct bpf_map_def SEC("maps") jmp_table = {
	.type = BPF_MAP_TYPE_PROG_ARRAY,
	.key_size = sizeof(unsigned int),
	.value_size = sizeof(unsigned int),
	.max_entries = 4,
};

struct bpf_map_def SEC("maps") runs = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(unsigned int),
	.value_size = sizeof(unsigned long long),
	.max_entries = 2,
};

static void count_run(unsigned int index)
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
