/* One map of each shape the BTF reader must define; the test asserts these numbers. */
#include "btf_maps.h"

struct flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
};

struct flow_stats {
	__u64 packets;
	__u64 bytes;
	__u32 last_seen[3];
};

typedef __u32 counter_index;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, counter_index);
	__type(value, long);
	__uint(max_entries, 256);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, const struct flow_stats);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 24);
	__uint(max_entries, 4);
} sized SEC(".maps");

int classify(struct __sk_buff *skb);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(max_entries, 8);
	__array(values, int (void *));
} jumps SEC(".maps") = {
	.values = {
		[2] = (void *)&classify,
	},
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__type(key, __u32);
		__type(value, __u64);
		__uint(max_entries, 16);
	});
} outer SEC(".maps");

SEC("socket/1")
int classify(struct __sk_buff *skb)
{
	struct flow_key key = { .proto = skb->protocol };
	struct flow_stats *stats = bpf_map_lookup_elem(&flows, &key);

	if (stats)
		stats->packets++;
	return 0;
}

SEC("socket")
int count(struct __sk_buff *skb)
{
	counter_index index = skb->protocol & 0xff;
	long *value = bpf_map_lookup_elem(&counters, &index);
	__u32 zero = 0;

	if (value)
		__sync_fetch_and_add(value, 1);
	if (bpf_map_lookup_elem(&sized, &zero) && bpf_map_lookup_elem(&outer, &zero))
		bpf_tail_call(skb, &jumps, 2);
	return 0;
}

char _license[] SEC("license") = "GPL";
