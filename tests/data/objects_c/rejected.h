/*
 * The program of the rejected objects; the including file declares the map
 * totals. With LONG_LOG defined, 4000 instructions come first, so that the
 * verifier's log outgrows a loader's first log buffer (64 KiB or less).
 */
#define TEN(x) x x x x x x x x x x
#ifdef LONG_LOG
#define PADDING TEN(TEN(TEN(asm volatile("r0 = 0" ::: "r0"); asm volatile("r0 = 1" ::: "r0");))) \
	TEN(TEN(TEN(asm volatile("r0 = 2" ::: "r0"); asm volatile("r0 = 3" ::: "r0");)))
#else
#define PADDING
#endif

SEC("socket/rejected")
int rejected(struct __sk_buff *skb)
{
	__u32 key = skb->protocol;
	__u64 *total;

	PADDING
	total = bpf_map_lookup_elem(&totals, &key);

	*total += skb->len;
	return 0;
}

char _license[] SEC("license") = "GPL";
