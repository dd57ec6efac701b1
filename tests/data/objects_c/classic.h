/* The legacy map definition: five 32-bit fields in section "maps". */
#ifndef OBJECTS_C_CLASSIC_H
#define OBJECTS_C_CLASSIC_H

struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

#endif
