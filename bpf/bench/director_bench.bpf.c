/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Bench-only entry points around the director's XDP program (the method and its pitfall:
 * docs/development/benchmarking.md): never shipped, never attached. director/benches/
 * datapath.rs loads this object with every map reused from the daemon's pins, so the program
 * sees real tables.
 *
 * BPF_PROG_TEST_RUN with repeat > 1 runs the program again and again on one buffer; an
 * encapsulating program would see its own output from the second run on. So after each run
 * xdplb_director_bench puts the original frame back: the head moves back to where it was and
 * the first BENCH_RESTORE bytes are rewritten from `bench_frame` (the program only writes in
 * front of the inner IP header, which starts within them). xdplb_bench_restore does only the
 * restoring, so its cost can be reported and subtracted. The bench checks that the frame
 * left after a million runs is the original. */
#include "../director.bpf.c"

#include "restore.h"

SEC("xdp")
int xdplb_director_bench(struct xdp_md *ctx)
{
	int rc = director(ctx);

	if (restore(ctx))
		return XDP_ABORTED; /* never expected: the bench asserts the verdict */
	return rc;
}

SEC("xdp")
int xdplb_bench_restore(struct xdp_md *ctx)
{
	if (restore(ctx))
		return XDP_ABORTED;
	return XDP_PASS;
}
