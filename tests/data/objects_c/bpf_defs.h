/*
 * What the test objects need, declared here rather than taken from libbpf's
 * headers, so that the classic objects depend on the kernel's UAPI only.
 */
#ifndef OBJECTS_C_BPF_DEFS_H
#define OBJECTS_C_BPF_DEFS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>

#define SEC(name) __attribute__((section(name), used))

/* Helper calls are calls to fixed helper numbers. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) =
	(void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   __u64 flags) = (void *)BPF_FUNC_map_update_elem;
static long (*bpf_tail_call)(void *ctx, void *prog_array, __u32 index) =
	(void *)BPF_FUNC_tail_call;

/* clang turns these into BPF_LD_ABS/BPF_LD_IND: bytes of the frame, in host order. */
unsigned long long load_byte(void *skb, unsigned long long off) asm("llvm.bpf.load.byte");
unsigned long long load_half(void *skb, unsigned long long off) asm("llvm.bpf.load.half");

#endif
