/* A map type the Python loader does not support (a per-CPU array) beside one it does. */
#include "common.h"

struct bpf_map_def SEC("maps") counts = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(unsigned int),
	.value_size = sizeof(unsigned long long),
	.max_entries = 4,
};

struct bpf_map_def SEC("maps") per_cpu = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(unsigned int),
	.value_size = sizeof(unsigned long long),
	.max_entries = 4,
};

SEC("socket1")
int count(struct __sk_buff *skb)
{
	unsigned int key = 0;
	unsigned long long *value = bpf_map_lookup_elem(&counts, &key);

	if (value)
		__sync_fetch_and_add(value, 1);
	value = bpf_map_lookup_elem(&per_cpu, &key);
	if (value)
		*value += 1;
	return 0;
}

char _license[] SEC("license") = "GPL";
