/* A well-formed program without a license section. */
#include "common.h"

struct bpf_map_def SEC("maps") my_map = {
	.type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 8, .max_entries = 256,
};

SEC("socket1")
int prog(struct __sk_buff *skb)
{
	int key = 0;
	long *value = bpf_map_lookup_elem(&my_map, &key);

	if (value)
		*value += skb->len;
	return 0;
}
