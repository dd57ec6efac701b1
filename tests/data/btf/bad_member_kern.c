/* max_entries written as a plain int rather than with __uint: no number in the type. */
#include "btf_maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	int max_entries;
} plain SEC(".maps");

SEC("socket")
int nothing(struct __sk_buff *skb)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&plain, &zero) != 0;
}

char _license[] SEC("license") = "GPL";
