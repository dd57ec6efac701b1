/*
 * Kinds an older kernel does not know: FLOAT (5.13), DECL_TAG (5.16), TYPE_TAG (5.17).
 * The map's value holds all three, so rewriting them must keep its size.
 */
#include "btf_maps.h"

#define __tag(x) __attribute__((btf_decl_tag(x)))
#define __user __attribute__((btf_type_tag("user")))

struct sample {
	float ratio;
	double mean __tag("unit:seconds");
	int __user *where;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sample);
	__uint(max_entries, 1);
} samples SEC(".maps");

SEC("socket")
int observe(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct sample *sample = bpf_map_lookup_elem(&samples, &zero);

	if (sample)
		sample->where = 0;
	return 0;
}

char _license[] SEC("license") = "GPL";
