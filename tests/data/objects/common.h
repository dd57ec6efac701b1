/* Shared by the small objects the loader and ELF reader tests compile. */
#include <stddef.h>
#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))

/* The classic map declaration: five 32-bit fields in section "maps". */
struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

/* Helper calls are calls to fixed helper numbers. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) =
	(void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   unsigned long long flags) =
	(void *)BPF_FUNC_map_update_elem;
static long (*bpf_tail_call)(void *ctx, void *map, unsigned int index) =
	(void *)BPF_FUNC_tail_call;
static long (*bpf_skb_load_bytes)(const void *skb, unsigned int offset, void *to,
				  unsigned int len) =
	(void *)BPF_FUNC_skb_load_bytes;

/* clang turns these into BPF_LD_ABS loads: a byte or a 16-bit word of the frame. */
unsigned long long load_byte(void *skb, unsigned long long off) asm("llvm.bpf.load.byte");
unsigned long long load_half(void *skb, unsigned long long off) asm("llvm.bpf.load.half");

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define IPPROTO_UDP 17
