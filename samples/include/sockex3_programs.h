// SPDX-License-Identifier: GPL-2.0
/*
 * sockex3's programs, the same in samples/sockex3 and samples/sockex3-btf: a
 * flow parser split over several socket filters chained by tail calls, counting
 * packets and bytes per flow (src, dst, sport, dport, IP protocol) in flow_map
 * (struct flow_key -> struct counters); the including <name>_kern.c declares it
 * and the prog array jmp_table (8 slots, filled by the loader from sample.py's
 * ProgArray) in its own form first.
 *
 * The entry program (socket/0, the one attached) reads the Ethernet header
 * and jumps, through the BPF_MAP_TYPE_PROG_ARRAY jmp_table, to the program
 * for what follows; each parser jumps on in turn:
 *
 *   socket/0  Ethernet  -> VLAN, IPv4 or IPv6
 *   socket/1  VLAN      an optional 802.1AD tag, then an optional 802.1Q tag
 *                       -> IPv4 or IPv6
 *   socket/2  IPv4      -> GRE, IPv4 (IPIP), IPv6 (IPv6 in IP) or the count
 *   socket/3  IPv6      -> the same
 *   socket/4  GRE       version 0 without routing; skips the checksum, key and
 *                       sequence words -> VLAN, IPv4 or IPv6, else the count
 *   socket/5  count     reads the ports (TCP and UDP) and counts the flow
 *
 * Only one tunnel is entered: a header inside a tunnel does not start a
 * second one. An IPv4 fragment gets IP protocol 0 (no ports, no tunnel). A
 * frame that is not IP after its tags is not counted. The longest chain
 * (Ethernet, VLAN, IPv4, GRE, VLAN, IPv4, count) is six tail calls, far below
 * the kernel's limit of 32.
 *
 * What one program tells the next travels in skb->cb[], which survives a tail
 * call and belongs to the packet being parsed, so that two CPUs parsing two
 * packets at once cannot mix their state (a shared scratch array would). The
 * entry program writes every word before any program reads one.
 *
 * Addresses are as load_word() returns them (host order: 127.0.0.2 is
 * 0x7f000002); an IPv6 address is folded to the XOR of its four 32-bit words.
 * The ports are the first word of the transport header: sport is its upper
 * half, dport its lower. bytes is skb->len, the frame with its Ethernet header.
 *
 * The semantics are those of sockex2 (one program, key = destination),
 * and harness/frames.py's dissect() models both; a change here is a change there.
 * Every packet load is absolute: a load past the frame's end ends the program
 * (and the chain), which counts nothing. Every program returns 0.
 */
#ifndef SAMPLES_SOCKEX3_PROGRAMS_H
#define SAMPLES_SOCKEX3_PROGRAMS_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>

#include "socket_filter.h"
#include "flow_dissect.h"
#include "sockex3.h"

/* Jump to the parser of the network header proto at cb[CB_NHOFF]; a frame of another kind ends. */
INLINE void parse_network(struct __sk_buff *skb, __u32 proto)
{
	skb->cb[CB_PROTO] = proto;
	if (proto == ETH_P_IP)
		bpf_tail_call(skb, &jmp_table, PARSE_IPV4);
	else if (proto == ETH_P_IPV6)
		bpf_tail_call(skb, &jmp_table, PARSE_IPV6);
}

/* After a network header: enter a tunnel unless inside one already, else count the flow. */
INLINE void parse_transport(struct __sk_buff *skb)
{
	__u32 ip_proto = skb->cb[CB_IP_PROTO];

	switch (ip_proto) {	/* TUNNELLED set: no case matches */
	case IPPROTO_GRE:
		skb->cb[CB_IP_PROTO] = ip_proto | TUNNELLED;
		bpf_tail_call(skb, &jmp_table, PARSE_GRE);
		break;
	case IPPROTO_IPIP:
		skb->cb[CB_IP_PROTO] = ip_proto | TUNNELLED;
		parse_network(skb, ETH_P_IP);
		break;
	case IPPROTO_IPV6:
		skb->cb[CB_IP_PROTO] = ip_proto | TUNNELLED;
		parse_network(skb, ETH_P_IPV6);
		break;
	}
	bpf_tail_call(skb, &jmp_table, COUNT_FLOW);
}

SEC("socket/0")
int parse_ethernet(struct __sk_buff *skb)
{
	__u32 proto = load_half(skb, offsetof(struct ethhdr, h_proto));

	skb->cb[CB_NHOFF] = ETH_HLEN;
	skb->cb[CB_PROTO] = proto;
	skb->cb[CB_SRC] = 0;
	skb->cb[CB_DST] = 0;
	skb->cb[CB_IP_PROTO] = 0;
	if (proto == ETH_P_8021AD || proto == ETH_P_8021Q)
		bpf_tail_call(skb, &jmp_table, PARSE_VLAN);
	else
		parse_network(skb, proto);
	return 0;
}

SEC("socket/1")
int parse_vlan(struct __sk_buff *skb)
{
	__u32 nhoff = skb->cb[CB_NHOFF];
	__u32 proto = skb->cb[CB_PROTO];

	if (proto == ETH_P_8021AD) {
		proto = load_half(skb, nhoff + 2);
		nhoff += VLAN_HLEN;
	}
	if (proto == ETH_P_8021Q) {
		proto = load_half(skb, nhoff + 2);
		nhoff += VLAN_HLEN;
	}
	skb->cb[CB_NHOFF] = nhoff;
	parse_network(skb, proto);
	/* Not IP: inside GRE, the flow is the outer header's, with IP protocol GRE. */
	if (skb->cb[CB_IP_PROTO] & TUNNELLED)
		bpf_tail_call(skb, &jmp_table, COUNT_FLOW);
	return 0;
}

SEC("socket/2")
int parse_ipv4(struct __sk_buff *skb)
{
	__u32 nhoff = skb->cb[CB_NHOFF];
	__u32 ihl = load_byte(skb, nhoff) & 0x0f;
	__u32 ip_proto = load_byte(skb, nhoff + offsetof(struct iphdr, protocol));

	if (load_half(skb, nhoff + offsetof(struct iphdr, frag_off)) & (IP_MF | IP_OFFSET))
		ip_proto = 0;
	skb->cb[CB_SRC] = load_word(skb, nhoff + offsetof(struct iphdr, saddr));
	skb->cb[CB_DST] = load_word(skb, nhoff + offsetof(struct iphdr, daddr));
	skb->cb[CB_IP_PROTO] = (skb->cb[CB_IP_PROTO] & TUNNELLED) | ip_proto;
	skb->cb[CB_NHOFF] = nhoff + ihl * 4;
	parse_transport(skb);
	return 0;
}

/* An IPv6 address folded into 32 bits: the XOR of its four words. */
INLINE __u32 fold_ipv6(struct __sk_buff *skb, __u32 off)
{
	return load_word(skb, off) ^ load_word(skb, off + 4) ^
	       load_word(skb, off + 8) ^ load_word(skb, off + 12);
}

SEC("socket/3")
int parse_ipv6(struct __sk_buff *skb)
{
	__u32 nhoff = skb->cb[CB_NHOFF];
	__u32 ip_proto = load_byte(skb, nhoff + offsetof(struct ipv6hdr, nexthdr));

	skb->cb[CB_SRC] = fold_ipv6(skb, nhoff + offsetof(struct ipv6hdr, saddr));
	skb->cb[CB_DST] = fold_ipv6(skb, nhoff + offsetof(struct ipv6hdr, daddr));
	skb->cb[CB_IP_PROTO] = (skb->cb[CB_IP_PROTO] & TUNNELLED) | ip_proto;
	skb->cb[CB_NHOFF] = nhoff + sizeof(struct ipv6hdr);
	parse_transport(skb);
	return 0;
}

SEC("socket/4")
int parse_gre(struct __sk_buff *skb)
{
	__u32 nhoff = skb->cb[CB_NHOFF];
	__u32 flags = load_half(skb, nhoff);
	__u32 proto = load_half(skb, nhoff + 2);

	if (!(flags & (GRE_VERSION | GRE_ROUTING))) {
		nhoff += 4;
		if (flags & GRE_CSUM)
			nhoff += 4;
		if (flags & GRE_KEY)
			nhoff += 4;
		if (flags & GRE_SEQ)
			nhoff += 4;
		skb->cb[CB_NHOFF] = nhoff;
		skb->cb[CB_PROTO] = proto;
		if (proto == ETH_P_8021AD || proto == ETH_P_8021Q)
			bpf_tail_call(skb, &jmp_table, PARSE_VLAN);
		else
			parse_network(skb, proto);
	}
	/* Not entered: the flow is the outer header's, with IP protocol GRE. */
	skb->cb[CB_IP_PROTO] = IPPROTO_GRE;
	bpf_tail_call(skb, &jmp_table, COUNT_FLOW);
	return 0;
}

SEC("socket/5")
int count_flow(struct __sk_buff *skb)
{
	__u32 ip_proto = skb->cb[CB_IP_PROTO] & 0xff;
	struct flow_key key = {
		.src = skb->cb[CB_SRC],
		.dst = skb->cb[CB_DST],
		.ip_proto = ip_proto,
	};
	struct counters first = { 1, skb->len };
	struct counters *counters;

	if (ip_proto == IPPROTO_TCP || ip_proto == IPPROTO_UDP) {
		__u32 ports = load_word(skb, skb->cb[CB_NHOFF]);

		key.sport = ports >> 16;
		key.dport = ports & 0xffff;
	}
	counters = bpf_map_lookup_elem(&flow_map, &key);
	if (!counters) {
		/* A racing CPU's first insert is not lost: add to it instead. */
		if (bpf_map_update_elem(&flow_map, &key, &first, BPF_NOEXIST) == 0)
			return 0;
		counters = bpf_map_lookup_elem(&flow_map, &key);
		if (!counters)
			return 0;	/* the map is full */
	}
	__sync_fetch_and_add(&counters->packets, 1);
	__sync_fetch_and_add(&counters->bytes, skb->len);
	return 0;
}

#endif
