// SPDX-License-Identifier: GPL-2.0
/*
 * What the harness's own socket-filter samples share: the section macro, the two
 * forms of map definition the loaders read, the helpers the programs call and the
 * absolute packet loads.
 *
 * A sample's <name>_kern.c includes it as "../include/socket_filter.h", a path
 * relative to its own folder, so that every build of it finds it without an -I
 * option (an A/B run's baseline tree too); the build's stamp covers every header
 * of samples/include, so a change here rebuilds every sample.
 */
#ifndef SAMPLES_SOCKET_FILTER_H
#define SAMPLES_SOCKET_FILTER_H

#include <stddef.h>
#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))
#define INLINE static inline __attribute__((always_inline))

/* The layout the loaders read from the "maps" section: five 32-bit fields. */
struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

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

#endif
