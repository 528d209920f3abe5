/*
 * requant_driver.c - the runtime's requantisation helpers over a cross product of cases, for
 * tests/compiler/test_requant_exhaustive.py (built with the host gcc; a stub arm_acle.h stands in
 * for the ARM one).
 *
 * stdin: int32 little-endian: nx, X[nx] (accumulators), nm, M[nm] (multipliers), ns, S[ns] (shifts),
 * no, O[no] (output offsets). stdout, int32 each, in this order:
 *   srdhm    mdt_srdhm(a, b)          for a, b in A = X ++ M          (|A| x |A|)
 *   rdbpot   mdt_rdbpot(x, e)         for x in X, e in 0..31          (nx x 32)
 *   mbqm     mdt_mbqm(x, m, s)        for x in X, m in M, s in S      (nx x nm x ns)
 *   rqf      mdt_rqf_apply(...) + post - off (mdt_dsp_rq.h), or INT32_MIN where !mdt_rqf_ok(m, s)
 *                                     for x in X, m in M, s in S, o in O (nx x nm x ns x no)
 *   rqs      mdt_rqs_apply(...) (mdt_dsp_rq.h), or INT32_MIN where !mdt_rqs_ok(m, s, ls)
 *                                     for ls in 0, 20 (an ADD's left_shift), x in X, m in M, s in S
 *                                     (2 x nx x nm x ns)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "mdt_dsp_rq.h"
#include "mdt_fixedpoint.h"

static int32_t *read_array(int32_t *n)
{
    int32_t *a;
    if (fread(n, 4, 1, stdin) != 1 || *n < 0) {
        exit(2);
    }
    a = malloc((size_t)(*n ? *n : 1) * 4u);
    if (!a || fread(a, 4, (size_t)*n, stdin) != (size_t)*n) {
        exit(2);
    }
    return a;
}

static int32_t buf[4096];
static size_t fill;

static void put(int32_t v)
{
    buf[fill++] = v;
    if (fill == sizeof buf / sizeof buf[0]) {
        fwrite(buf, 4, fill, stdout);
        fill = 0;
    }
}

int main(void)
{
    int32_t nx, nm, ns, no, i, j, k, l, e;
    int32_t *X = read_array(&nx), *M = read_array(&nm), *S = read_array(&ns), *O = read_array(&no);
    int32_t *A = malloc((size_t)(nx + nm) * 4u);
    for (i = 0; i < nx; i++) {
        A[i] = X[i];
    }
    for (i = 0; i < nm; i++) {
        A[nx + i] = M[i];
    }
    for (i = 0; i < nx + nm; i++) {
        for (j = 0; j < nx + nm; j++) {
            put(mdt_srdhm(A[i], A[j]));
        }
    }
    for (i = 0; i < nx; i++) {
        for (e = 0; e < 32; e++) {
            put(mdt_rdbpot(X[i], e));
        }
    }
    for (i = 0; i < nx; i++) {
        for (j = 0; j < nm; j++) {
            for (k = 0; k < ns; k++) {
                put(mdt_mbqm(X[i], M[j], S[k]));
            }
        }
    }
    for (i = 0; i < nx; i++) {
        for (j = 0; j < nm; j++) {
            for (k = 0; k < ns; k++) {
                const int ok = mdt_rqf_ok(M[j], S[k]);
                for (l = 0; l < no; l++) {
                    if (ok) {
                        const mdt_rqf r = mdt_rqf_make(M[j], S[k], O[l]);
                        put(mdt_rqf_apply(mdt_rqf_k(&r), r.m, r.sh, X[i]) + r.post - O[l]);
                    } else {
                        put(INT32_MIN);
                    }
                }
            }
        }
    }
    for (l = 0; l <= 20; l += 20) {
        for (i = 0; i < nx; i++) {
            for (j = 0; j < nm; j++) {
                for (k = 0; k < ns; k++) {
                    if (mdt_rqs_ok(M[j], S[k], l)) {
                        const mdt_rqs r = mdt_rqs_make(M[j], S[k], l);
                        put(mdt_rqs_apply(r.k, r.m, r.sh, r.left, r.plain, X[i]));
                    } else {
                        put(INT32_MIN);
                    }
                }
            }
        }
    }
    fwrite(buf, 4, fill, stdout);
    return 0;
}
