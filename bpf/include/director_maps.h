/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The director's maps: all pinned by the daemon under <bpffs_dir>/director and reused across
 * restarts (their key and value types are in abi.h). Included once, by bpf/director.bpf.c. */
#ifndef XDPLB_DIRECTOR_MAPS_H
#define XDPLB_DIRECTOR_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"

/* Service slot -> that service's current table (entry 0 header, 1 + r row r). A reload builds
 * a new inner map and swaps the slot: a packet sees the whole old or the whole new version.
 * Tables of exactly DIRECTOR_FIXED_ROWS (2^16) rows are in director_tables_fixed (one size:
 * the lookups are inlined); every other size tablegen builds (2^8..2^20 rows, smaller or
 * larger) is here: BPF_F_INNER_MAP lets versions of different sizes share the slot type. BPF_F_MMAPABLE lets the daemon fill a new version with one memory copy
 * instead of a syscall per row. */
struct director_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP | BPF_F_MMAPABLE);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, union director_slot);
};

/* Never read by the program: its definition gives BTF the full slot type (clang emits only a
 * forward declaration for types reached solely through the map-in-map definition), so
 * libbpf can create the inner-map template and libbpf-cargo can generate the Rust type. */
struct director_table director_table_template SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, DIRECTOR_MAX_SERVICES);
	__type(key, __u32);
	__array(values, struct director_table);
} director_tables SEC(".maps");

/* Flow hashes already started per VIP (abi.h): a packet hashes only its source part, and
 * need not wait for the bind match and the table lookup to start. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DIRECTOR_HASH_STATES);
	__type(key, __u32);
	__type(value, struct director_hash_state);
} director_hash_states SEC(".maps");

/* Tables of DIRECTOR_FIXED_ROWS rows (abi.h): one size, so lookups in them are inlined. */
struct director_table_fixed {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1 + DIRECTOR_FIXED_ROWS);
	__type(key, __u32);
	__type(value, union director_slot);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, DIRECTOR_MAX_SERVICES);
	__type(key, __u32);
	__array(values, struct director_table_fixed);
} director_tables_fixed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DIRECTOR_MAX_VIPS);
	__type(key, struct director_vip_key);
	__type(value, struct director_vip);
} director_vips SEC(".maps");

/* The bind index (abi.h): the fast path of every TCP/UDP packet to a VIP. No BPF_F_INNER_MAP:
 * every version has the same size, so the verifier inlines the lookup. */
struct director_vip_index_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DIRECTOR_VIP_SLOTS);
	__type(key, __u32);
	__type(value, struct director_vip_slot);
};

/* For BTF, as director_table_template. */
struct director_vip_index_map director_vip_index_template SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct director_vip_index_map);
} director_vip_index SEC(".maps");

/* Which addresses may be VIPs (abi.h): the early exit for host traffic. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct director_vip_filter);
} director_vip_filter SEC(".maps");

/* A map, not rodata, so a restarted daemon can change addresses without reloading. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct director_config);
} director_config SEC(".maps");

/* Next hops per backend and CPU: bpf_fib_lookup costs more than everything else together,
 * so its answer is reused until it expires (nexthop_ttl_ms) or the daemon bumps the
 * generation. Per CPU: no locking, and no CPU ever reads a half-written MAC. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DIRECTOR_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct director_nexthop);
} director_nexthops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DIRECTOR_COUNTERS_MAX);
	__type(key, __u32);
	__type(value, struct director_counter);
} stats_reason SEC(".maps");

/* Never written here: what the removed binds of each service counted, kept by the daemon. A
 * service's count is that plus its binds' (one counter per packet instead of two). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DIRECTOR_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct director_counter);
} stats_service_retired SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DIRECTOR_MAX_BINDS);
	__type(key, __u32);
	__type(value, struct director_counter);
} stats_bind SEC(".maps");

#endif
