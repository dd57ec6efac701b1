/* The program of the rejected objects; the including file declares the map totals. */
SEC("socket/rejected")
int rejected(struct __sk_buff *skb)
{
	__u32 key = skb->protocol;
	__u64 *total = bpf_map_lookup_elem(&totals, &key);

	*total += skb->len;
	return 0;
}

char _license[] SEC("license") = "GPL";
