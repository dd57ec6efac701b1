/* What the kernel's own samples/bpf kernel sides take from the kernel's internal headers.
 *
 * The kernel's Makefile compiles them with -D__KERNEL__ against the whole configured
 * source tree; the harness compiles them against the release's UAPI headers instead
 * (`<uapi/linux/...>` reaches them through a directory named uapi), and this header,
 * given with -include, supplies the few kernel-internal names they use: the short
 * integer types of <linux/types.h>, bool of <linux/stddef.h>, likely() and unlikely()
 * of <linux/compiler.h> and __stringify of <linux/stringify.h> (for a sample's
 * PROG() macro). A name still missing is an error of the build
 * (-Werror=implicit-function-declaration), not a call to an unknown function.
 */
#ifndef HARNESS_UPSTREAM_PRELUDE_H
#define HARNESS_UPSTREAM_PRELUDE_H

#include <linux/types.h>
#include <stdbool.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s8 s8;
typedef __s16 s16;
typedef __s32 s32;
typedef __s64 s64;

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define __stringify_1(x...) #x
#define __stringify(x...) __stringify_1(x)

#endif
