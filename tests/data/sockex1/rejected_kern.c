/*
 * The map value is used without a NULL check: the verifier must refuse it. The
 * key comes from the packet, so the verifier cannot prove the lookup succeeds.
 */
#include "common.h"

struct bpf_map_def SEC("maps") my_map = {
	.type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 8, .max_entries = 256,
};

SEC("socket1")
int prog(struct __sk_buff *skb)
{
	int key = skb->protocol;
	long *value = bpf_map_lookup_elem(&my_map, &key);

	*value += skb->len;
	return 0;
}

char _license[] SEC("license") = "GPL";
