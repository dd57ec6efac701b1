/*
 * BTF-defined maps whose first contents the object declares (__array(values, ...)):
 * jumps, a prog array whose slot 2 starts with the program of "socket/1", and
 * outer, an array of maps whose slot 1 starts with the map inner_a (both inner maps
 * share the definition of outer's values). Slots nobody names stay empty.
 */
#include "common.h"

#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]

struct inner_def {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, unsigned int);
	__type(value, unsigned long long);
	__uint(max_entries, 4);
};

struct inner_def inner_a SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 3);
	__type(key, unsigned int);
	__array(values, struct inner_def);
} outer SEC(".maps") = {
	.values = { [1] = &inner_a },
};

int second(struct __sk_buff *skb);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(unsigned int));
	__uint(max_entries, 4);
	__array(values, int (void *));
} jumps SEC(".maps") = {
	.values = { [2] = (void *)&second },
};

SEC("socket/0")
int first(struct __sk_buff *skb)
{
	unsigned int one = 1, zero = 0;
	void *inner = bpf_map_lookup_elem(&outer, &one);
	unsigned long long *value;

	if (!inner)
		return 0;
	value = bpf_map_lookup_elem(inner, &zero);
	if (value)
		__sync_fetch_and_add(value, 1);
	bpf_tail_call(skb, &jumps, 2);
	return 0;
}

SEC("socket/1")
int second(struct __sk_buff *skb)
{
	return 0;
}

char _license[] SEC("license") = "GPL";
