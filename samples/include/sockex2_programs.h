// SPDX-License-Identifier: GPL-2.0
/*
 * sockex2's program, the same in samples/sockex2 and samples/sockex2-btf: it
 * dissects every frame its socket sees into a flow and counts packets and bytes
 * per flow destination, in the hash map hash_map (u32 destination -> struct
 * counters) that the including <name>_kern.c declares in its own form first.
 *
 * The dissector follows Ethernet, an optional 802.1AD tag then an optional
 * 802.1Q tag, IPv4 or IPv6, and one level of tunnel: GRE (version 0, no
 * routing; its checksum, key and sequence words skipped; IPv4 or IPv6 inside,
 * optionally tagged), IPIP and IPv6 in IP. An IPv4 fragment, first or later,
 * gets IP protocol 0, so it is never taken for a tunnel. Extension headers of
 * IPv6 are not followed. Anything that is not IP after its tags is not counted.
 *
 * The key is the innermost destination as the program holds it: for IPv4 the
 * address as load_word() returns it (host order: 127.0.0.2 is 0x7f000002), for
 * IPv6 the XOR of the address's four 32-bit words, each loaded the same way.
 * The value is {packets, bytes}, bytes being skb->len: the whole frame with its
 * Ethernet header, as the packet socket sees it.
 *
 * harness/frames.py's dissect() is the model of this program that the
 * sample's oracle runs over the frames of an independent capture; a change
 * here is a change there.
 *
 * Every packet load is absolute (BPF_LD_ABS/IND): a load past the end of the
 * frame ends the program, which then returns 0 having counted nothing. The
 * program always returns 0, so its socket never queues a frame.
 */
#ifndef SAMPLES_SOCKEX2_PROGRAMS_H
#define SAMPLES_SOCKEX2_PROGRAMS_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>

#include "socket_filter.h"
#include "flow_dissect.h"

struct flow {
	__u32 src;
	__u32 dst;
	__u32 ip_proto;
	__u32 nhoff;	/* offset of the next header to parse */
};

/* An optional 802.1AD tag, then an optional 802.1Q tag; returns the ethertype after them. */
INLINE __u32 skip_tags(struct __sk_buff *skb, __u32 proto, struct flow *flow)
{
	if (proto == ETH_P_8021AD) {
		proto = load_half(skb, flow->nhoff + 2);
		flow->nhoff += VLAN_HLEN;
	}
	if (proto == ETH_P_8021Q) {
		proto = load_half(skb, flow->nhoff + 2);
		flow->nhoff += VLAN_HLEN;
	}
	return proto;
}

INLINE void parse_ipv4(struct __sk_buff *skb, struct flow *flow)
{
	__u32 nhoff = flow->nhoff;
	__u32 ihl = load_byte(skb, nhoff) & 0x0f;

	flow->ip_proto = load_byte(skb, nhoff + offsetof(struct iphdr, protocol));
	if (load_half(skb, nhoff + offsetof(struct iphdr, frag_off)) & (IP_MF | IP_OFFSET))
		flow->ip_proto = 0;
	flow->src = load_word(skb, nhoff + offsetof(struct iphdr, saddr));
	flow->dst = load_word(skb, nhoff + offsetof(struct iphdr, daddr));
	flow->nhoff = nhoff + ihl * 4;
}

/* An IPv6 address folded into 32 bits: the XOR of its four words. */
INLINE __u32 fold_ipv6(struct __sk_buff *skb, __u32 off)
{
	return load_word(skb, off) ^ load_word(skb, off + 4) ^
	       load_word(skb, off + 8) ^ load_word(skb, off + 12);
}

INLINE void parse_ipv6(struct __sk_buff *skb, struct flow *flow)
{
	__u32 nhoff = flow->nhoff;

	flow->ip_proto = load_byte(skb, nhoff + offsetof(struct ipv6hdr, nexthdr));
	flow->src = fold_ipv6(skb, nhoff + offsetof(struct ipv6hdr, saddr));
	flow->dst = fold_ipv6(skb, nhoff + offsetof(struct ipv6hdr, daddr));
	flow->nhoff = nhoff + sizeof(struct ipv6hdr);
}

/* The IPv4 or IPv6 header at flow->nhoff; 0 for any other ethertype. */
INLINE int parse_network(struct __sk_buff *skb, __u32 proto, struct flow *flow)
{
	if (proto == ETH_P_IP)
		parse_ipv4(skb, flow);
	else if (proto == ETH_P_IPV6)
		parse_ipv6(skb, flow);
	else
		return 0;
	return 1;
}

/* One level of tunnel: the header inside GRE, IPIP or IPv6 in IP replaces the outer one. */
INLINE void parse_tunnel(struct __sk_buff *skb, struct flow *flow)
{
	__u32 flags, proto;

	switch (flow->ip_proto) {
	case IPPROTO_GRE:
		flags = load_half(skb, flow->nhoff);
		proto = load_half(skb, flow->nhoff + 2);
		if (flags & (GRE_VERSION | GRE_ROUTING))
			break;
		flow->nhoff += 4;
		if (flags & GRE_CSUM)
			flow->nhoff += 4;
		if (flags & GRE_KEY)
			flow->nhoff += 4;
		if (flags & GRE_SEQ)
			flow->nhoff += 4;
		proto = skip_tags(skb, proto, flow);
		parse_network(skb, proto, flow);
		break;
	case IPPROTO_IPIP:
		parse_ipv4(skb, flow);
		break;
	case IPPROTO_IPV6:
		parse_ipv6(skb, flow);
		break;
	}
}

/* Add one packet of len bytes under key; a racing CPU's first insert is not lost. */
INLINE void count(void *map, const void *key, long len)
{
	struct counters *counters = bpf_map_lookup_elem(map, key);
	struct counters first = { 1, len };

	if (!counters) {
		if (bpf_map_update_elem(map, key, &first, BPF_NOEXIST) == 0)
			return;
		counters = bpf_map_lookup_elem(map, key);
		if (!counters)
			return;	/* the map is full */
	}
	__sync_fetch_and_add(&counters->packets, 1);
	__sync_fetch_and_add(&counters->bytes, len);
}

SEC("socket2")
int count_by_destination(struct __sk_buff *skb)
{
	struct flow flow = { .nhoff = ETH_HLEN };
	__u32 proto;

	proto = skip_tags(skb, load_half(skb, offsetof(struct ethhdr, h_proto)), &flow);
	if (!parse_network(skb, proto, &flow))
		return 0;
	parse_tunnel(skb, &flow);
	count(&hash_map, &flow.dst, skb->len);
	return 0;
}

#endif
