/* A map value used without a NULL check: the verifier must refuse the program. */
#include "bpf_defs.h"
#include "classic.h"

struct bpf_map_def SEC("maps") totals = {
	.type = BPF_MAP_TYPE_HASH, .key_size = 4, .value_size = 8, .max_entries = 16,
};

#include "rejected.h"
