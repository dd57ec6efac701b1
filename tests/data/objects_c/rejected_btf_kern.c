/* A map value used without a NULL check: the verifier must refuse the program. */
#include "bpf_defs.h"
#include "btf.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 16);
} totals SEC(".maps");

#include "rejected.h"
