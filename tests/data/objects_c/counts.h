/* The value of the udp_ports objects' map ports: what one destination port saw. */
#ifndef OBJECTS_C_COUNTS_H
#define OBJECTS_C_COUNTS_H

struct counts {
	__u64 packets;
	__u64 bytes;
};

#endif
