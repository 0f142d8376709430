/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The redirector's load-time settings and maps (pinned by the daemon under
 * <bpffs_dir>/redirector; key and value types in abi.h), and its counters per reason.
 * Included once, by bpf/redirector.bpf.c. */
#ifndef XDPLB_REDIRECTOR_MAPS_H
#define XDPLB_REDIRECTOR_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"
#include "gue.h"

/* Set by userspace before load (a change means a new program, swapped in atomically). */
const volatile __u16 gue_port = GUE_DEFAULT_PORT; /* host byte order */

/* How long a next hop from bpf_fib_lookup is reused (ms); 0 = ask the kernel for every packet.
 * The daemon's nexthop_ttl_ms; it bounds a change the daemon did not report. */
const volatile __u32 nexthop_ttl_ms = 100;

/* Readable by userspace so it can tell which reasons this object counts. */
const volatile enum redir_reason redir_reason_count = REDIR_REASON_COUNT;

/* Never read by the program: it names enum redir_limit so that the object's BTF, and the Rust
 * types generated from it, carry the map sizes (abi.h). */
const volatile enum redir_limit redir_limits = REDIR_COUNTERS_MAX;

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, REDIR_MAX_ALLOWED);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct redir_lpm_v4);
	__type(value, __u8);
} allowed_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, REDIR_MAX_ALLOWED);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct redir_lpm_v6);
	__type(value, __u8);
} allowed_v6 SEC(".maps");

/* This host's addresses beyond the packet's own outer destination: a hop naming one of them is
 * "self". */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, REDIR_MAX_SELF_ADDRS);
	__type(key, struct redir_addr);
	__type(value, __u8);
} self_addrs SEC(".maps");

/* One entry; an array lookup is inlined by the verifier, so reading it costs almost nothing. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct redir_settings);
} settings SEC(".maps");

/* Next hops per CPU (bpf/include/nexthop.h): bpf_fib_lookup costs more than the rest of a
 * forward, so its answer is reused. Per CPU: no locking, no half-written MAC. Not pinned: a
 * new program starts cold. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REDIR_NEXTHOP_SLOTS);
	__type(key, __u32);
	__type(value, struct redir_nexthop);
} nexthops SEC(".maps");

/* Packets per reason. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REDIR_COUNTERS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Their bytes (skb->len as received: Ethernet header, outer headers and all). A map of its
 * own rather than a wider value in `counters`: pins of an older version keep counting packets
 * across an upgrade, and this one is created beside them. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REDIR_COUNTERS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counter_bytes SEC(".maps");

static __always_inline void count(enum redir_reason reason, __u32 len)
{
	__u32 key = reason;
	__u64 *n = bpf_map_lookup_elem(&counters, &key);
	__u64 *b = bpf_map_lookup_elem(&counter_bytes, &key);

	if (n)
		*n += 1;
	if (b)
		*b += len;
}

#endif
