/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Bench-only (docs/development/benchmarking.md): put the original frame back after a run,
 * so BPF_PROG_TEST_RUN with repeat > 1 measures every run on the original frame. The head
 * moves back to where it was and the first BENCH_RESTORE bytes are rewritten from `bench_frame` (the programs
 * measured only write in front of the inner IP header, which starts within them). The bench
 * fills `bench_frame`, measures a restore-only entry point and subtracts it. */
#ifndef XDPLB_BENCH_RESTORE_H
#define XDPLB_BENCH_RESTORE_H

#include "parse.h" /* frame_bytes */

#define BENCH_RESTORE 64

struct bench_frame {
	__u32 len; /* the original frame's length */
	__u32 pad;
	__u8 bytes[BENCH_RESTORE];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_frame);
} bench_frame SEC(".maps");

static __always_inline int restore(struct xdp_md *ctx)
{
	const struct bench_frame *f;
	__u32 zero = 0;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 *dst;
	const __u64 *src;

	f = bpf_map_lookup_elem(&bench_frame, &zero);
	if (!f)
		return -1;
	/* Always one helper call, also when the head did not move (pass paths, restore only). */
	if (bpf_xdp_adjust_head(ctx, (int)frame_bytes(data, data_end) - (int)f->len))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + BENCH_RESTORE > data_end)
		return -1;
	dst = data;
	src = (const __u64 *)f->bytes;
#pragma unroll
	for (int i = 0; i < BENCH_RESTORE / 8; i++)
		dst[i] = src[i];
	return 0;
}

#endif
