/* A variable in .maps that is not a map definition: the reader must name it. */
#include "btf_maps.h"

int stray SEC(".maps");

SEC("socket")
int nothing(struct __sk_buff *skb)
{
	return stray;
}

char _license[] SEC("license") = "GPL";
