// SPDX-License-Identifier: GPL-2.0
/*
 * sockex3-btf: a flow parser split over several socket filters chained by
 * tail calls, counting packets and bytes per flow (src, dst, sport, dport, IP
 * protocol) in a hash map.
 *
 * The programs of samples/sockex3 with both maps BTF-defined in section
 * ".maps": jmp_table, the prog array, by its key and value sizes (the loader
 * fills it from sample.py's ProgArray; nothing initialises it here), and
 * flow_map by its key and value types. What they compute is the same.
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
 * The semantics are those of samples/sockex2-btf (one program, key = destination),
 * and harness/frames.py's dissect() models both; a change here is a change there.
 * Every packet load is absolute: a load past the frame's end ends the program
 * (and the chain), which counts nothing. Every program returns 0.
 */
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>

#define SEC(name) __attribute__((section(name), used))
#define INLINE static inline __attribute__((always_inline))
/*
 * A BTF-defined map is a struct whose members encode its definition in their
 * types: a number as the length of an array pointed to, a type as the type
 * pointed to. Loaders read them from the object's BTF (built with -g).
 */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) =
	(void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   unsigned long long flags) =
	(void *)BPF_FUNC_map_update_elem;
static long (*bpf_tail_call)(void *ctx, void *prog_array, unsigned int index) =
	(void *)BPF_FUNC_tail_call;

/* clang turns these into BPF_LD_ABS/IND: network-order bytes, returned in host order. */
unsigned long long load_byte(void *skb, unsigned long long off) asm("llvm.bpf.load.byte");
unsigned long long load_half(void *skb, unsigned long long off) asm("llvm.bpf.load.half");
unsigned long long load_word(void *skb, unsigned long long off) asm("llvm.bpf.load.word");

#define VLAN_HLEN 4
/* The first 16 bits of a GRE header (RFC 2784, RFC 2890). */
#define GRE_CSUM 0x8000
#define GRE_ROUTING 0x4000
#define GRE_KEY 0x2000
#define GRE_SEQ 0x1000
#define GRE_VERSION 0x0007
/* IPv4 frag_off: more fragments, fragment offset. */
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* The slots of jmp_table; sample.py's ProgArray fills them with these sections. */
#define PARSE_VLAN 1
#define PARSE_IPV4 2
#define PARSE_IPV6 3
#define PARSE_GRE 4
#define COUNT_FLOW 5

/* The parse state in skb->cb[]: five 32-bit words. */
#define CB_NHOFF 0	/* offset of the next header to parse */
#define CB_PROTO 1	/* the ethertype of that header (for VLAN and the network headers) */
#define CB_SRC 2
#define CB_DST 3
#define CB_IP_PROTO 4	/* IP protocol in the low byte; TUNNELLED once inside a tunnel */
#define TUNNELLED 0x100

struct flow_key {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u32 ip_proto;
};

struct counters {
	long packets;
	long bytes;
};

/*
 * Sizes, not types: a prog array's values are program fds as the loader writes
 * them. It is left empty here; the loader fills it from sample.py's ProgArray.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 8);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} jmp_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct counters);
	__uint(max_entries, 1024);
} flow_map SEC(".maps");

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

char _license[] SEC("license") = "GPL";
