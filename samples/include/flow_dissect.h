// SPDX-License-Identifier: GPL-2.0
/*
 * The header constants and the counters of the flow-dissecting samples (sockex2,
 * sockex3 and their -btf twins): what they count per flow is {packets, bytes},
 * bytes being skb->len, the whole frame with its Ethernet header.
 */
#ifndef SAMPLES_FLOW_DISSECT_H
#define SAMPLES_FLOW_DISSECT_H

#include <linux/bpf.h>

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

struct counters {
	long packets;
	long bytes;
};

#endif
