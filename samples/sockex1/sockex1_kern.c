// SPDX-License-Identifier: GPL-2.0
/*
 * sockex1: a socket filter that counts, per IP protocol, the bytes of every
 * packet its socket sees.
 *
 * The filter reads the protocol byte of the IPv4 header (the byte at offset
 * ETH_HLEN + 9 of the frame) with an absolute packet load, uses it as the
 * index into a 256-entry array map and adds skb->len, the whole frame with its
 * Ethernet header, to that entry. It returns 0, so the socket itself never
 * queues a packet: the map is its only output.
 *
 * The map is declared in the legacy "maps" section (struct bpf_map_def) that
 * the loaders in this directory and harness/bpf understand.
 */
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>

#define SEC(name) __attribute__((section(name), used))

/* The layout both loaders read from the "maps" section: five 32-bit fields. */
struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

/* Helper calls are calls to fixed helper numbers. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) =
	(void *)BPF_FUNC_map_lookup_elem;

/* clang turns this into BPF_LD_ABS | BPF_B: a byte at an offset of the frame. */
unsigned long long load_byte(void *skb, unsigned long long off)
	asm("llvm.bpf.load.byte");

struct bpf_map_def SEC("maps") my_map = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(int),
	.value_size = sizeof(long),
	.max_entries = 256,
};

SEC("socket1")
int count_by_protocol(struct __sk_buff *skb)
{
	int protocol = load_byte(skb, ETH_HLEN + offsetof(struct iphdr, protocol));
	long *bytes;

	bytes = bpf_map_lookup_elem(&my_map, &protocol);
	if (bytes)
		__sync_fetch_and_add(bytes, skb->len);

	return 0;
}

char _license[] SEC("license") = "GPL";
