// SPDX-License-Identifier: GPL-2.0
/*
 * sockex3's parse state, jump slots and flow key, the same in samples/sockex3 and
 * samples/sockex3-btf: what the including <name>_kern.c needs to declare its maps
 * (samples/include/sockex3_programs.h has the programs and what they do).
 */
#ifndef SAMPLES_SOCKEX3_H
#define SAMPLES_SOCKEX3_H

#include <linux/bpf.h>

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

#endif
