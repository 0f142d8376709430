/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The kernel <-> userspace contract: every map key and value struct and every enum that both
 * sides read. The only such contract: Rust uses the types libbpf-cargo generates from BTF.
 *
 * Rules: fixed-width types, explicit padding fields, no bool, no bitfields, byte order stated
 * on every address and port field. Reason enums are append-only: a retired value is renamed
 * (RETIRED_...), never reused. */
#ifndef XDPLB_ABI_H
#define XDPLB_ABI_H

#include <linux/types.h>

/* Flow hash fields a service hashes; same bits as tablegen::hash::HashFields. */
#define XDPLB_HASH_SRC_IP 1
#define XDPLB_HASH_SRC_PORT 2
#define XDPLB_HASH_DST_IP 4
#define XDPLB_HASH_DST_PORT 8

/* ---- director (bpf/director.bpf.c) ---- */

/* ---- redirector (bpf/redirector.bpf.c) ---- */

#endif
