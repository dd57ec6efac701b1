// SPDX-License-Identifier: GPL-2.0
/*
 * sockex1-btf: a socket filter that counts, per IP protocol, the bytes of
 * every packet its socket sees leaving the machine.
 *
 * The modern form of samples/sockex1: the map is BTF-defined (a struct in
 * section ".maps", built with -g, so that its key and value types are in the
 * object's BTF), and only frames whose skb->pkt_type is PACKET_OUTGOING are
 * counted. On lo every packet is seen twice, leaving (PACKET_OUTGOING) and
 * arriving (PACKET_HOST); this filter counts each one once.
 *
 * For such a frame it reads the protocol byte of the IPv4 header (offset
 * ETH_HLEN + 9) with an absolute packet load, uses it as the index into a
 * 256-entry array map and adds skb->len, the whole frame with its Ethernet
 * header, to that entry. It returns 0, so the socket itself never queues a
 * packet: the map is its only output.
 */
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/ip.h>

#define SEC(name) __attribute__((section(name), used))
/*
 * A BTF-defined map is a struct whose members encode its definition in their
 * types: a number as the length of an array pointed to, a type as the type
 * pointed to. Loaders read them from the object's BTF, not from its bytes.
 */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

/* Helper calls are calls to fixed helper numbers. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) =
	(void *)BPF_FUNC_map_lookup_elem;

/* clang turns this into BPF_LD_ABS | BPF_B: a byte at an offset of the frame. */
unsigned long long load_byte(void *skb, unsigned long long off)
	asm("llvm.bpf.load.byte");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, long);
	__uint(max_entries, 256);
} my_map SEC(".maps");

SEC("socket1")
int count_outgoing_by_protocol(struct __sk_buff *skb)
{
	__u32 protocol;
	long *bytes;

	if (skb->pkt_type != PACKET_OUTGOING)
		return 0;
	protocol = load_byte(skb, ETH_HLEN + offsetof(struct iphdr, protocol));
	bytes = bpf_map_lookup_elem(&my_map, &protocol);
	if (bytes)
		__sync_fetch_and_add(bytes, skb->len);

	return 0;
}

char _license[] SEC("license") = "GPL";
