/*
 * The programs of the udp_ports objects; the including file declares the maps
 * in its own format: ports, a hash from a UDP destination port (__u32) to
 * struct counts, and jump, a prog array whose index 0 the loader fills with
 * the program of section socket/count.
 *
 * socket/entry is the program attached to the socket: it only tail-calls
 * jump[0], so ports fills only if the loader filled the prog array.
 * socket/count counts, per destination port, the IPv4 UDP frames and their
 * bytes (skb->len, the Ethernet header included). An including file may put
 * them in other sections (ENTRY_SECTION, COUNT_SECTION), one section for both.
 */
#include "bpf_defs.h"
#include "counts.h"

#ifndef ENTRY_SECTION
#define ENTRY_SECTION "socket/entry"
#endif
#ifndef COUNT_SECTION
#define COUNT_SECTION "socket/count"
#endif

#define ETH_TYPE_OFFSET 12
#define IP_OFFSET ETH_HLEN
#define IP_PROTOCOL_OFFSET (IP_OFFSET + 9)
#define UDP_DEST_OFFSET 2

SEC(ENTRY_SECTION)
int entry(struct __sk_buff *skb)
{
	bpf_tail_call(skb, &jump, 0);
	return 0;
}

SEC(COUNT_SECTION)
int count_udp(struct __sk_buff *skb)
{
	struct counts zero = { 0, 0 }, *counts;
	__u32 header_length, port;

	if (load_half(skb, ETH_TYPE_OFFSET) != ETH_P_IP ||
	    load_byte(skb, IP_PROTOCOL_OFFSET) != IPPROTO_UDP)
		return 0;
	header_length = (load_byte(skb, IP_OFFSET) & 0xf) * 4;
	port = load_half(skb, IP_OFFSET + header_length + UDP_DEST_OFFSET);

	counts = bpf_map_lookup_elem(&ports, &port);
	if (!counts) {
		/* NOEXIST: of two first frames of a port on two CPUs, neither resets the other. */
		bpf_map_update_elem(&ports, &port, &zero, BPF_NOEXIST);
		counts = bpf_map_lookup_elem(&ports, &port);
		if (!counts)
			return 0;
	}
	__sync_fetch_and_add(&counts->packets, 1);
	__sync_fetch_and_add(&counts->bytes, skb->len);
	return 0;
}

char _license[] SEC("license") = "GPL";
