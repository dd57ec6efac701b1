/* A map definition of six fields: section maps is 24 bytes, not a multiple of 20. */
#include "common.h"

struct wide_map_def {
	unsigned int type, key_size, value_size, max_entries, map_flags, extra;
};

struct wide_map_def SEC("maps") my_map = {
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

char _license[] SEC("license") = "GPL";
