/* A program that refers to a global variable, not to a map of section maps. */
#include "common.h"

long counter SEC(".data.counter") = 1;

SEC("socket1")
int prog(struct __sk_buff *skb)
{
	return counter + skb->len;
}

char _license[] SEC("license") = "GPL";
