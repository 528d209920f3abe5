/*
 * harness.c - host test harness for one compiled graph: reads samples (all inputs' bytes, in
 * order) from stdin until EOF, runs the graph, writes all outputs' bytes to stdout.
 * harness_cfg.h (generated next to it) names the graph's run function and I/O offsets.
 */
#include <stdio.h>
#include <stdlib.h>

#include "harness_cfg.h"

#ifdef MDT_HARNESS_HEAP_ARENA
/* The sanitized build (host_runner.py): the arena is a heap block of exactly MDT_ARENA_SIZE bytes,
 * so AddressSanitizer catches any access before or past it (a static array shares its redzone
 * with its neighbours' padding). */
static int8_t *arena;
#else
static int8_t arena[MDT_ARENA_SIZE];
#endif

int main(void)
{
    static const long in_off[] = H_INPUT_OFFSETS;
    static const long in_size[] = H_INPUT_SIZES;
    static const long out_off[] = H_OUTPUT_OFFSETS;
    static const long out_size[] = H_OUTPUT_SIZES;
    unsigned i;
#ifdef MDT_HARNESS_HEAP_ARENA
    arena = (int8_t *)malloc(MDT_ARENA_SIZE);
    if (arena == NULL) {
        return 4;
    }
#endif
    for (;;) {
        for (i = 0; i < sizeof in_off / sizeof in_off[0]; ++i) {
            size_t got = fread(arena + in_off[i], 1, (size_t)in_size[i], stdin);
            if (got == 0 && i == 0 && feof(stdin)) {
                return 0;
            }
            if (got != (size_t)in_size[i]) {
                fprintf(stderr, "harness: short input (%lu of %ld bytes)\n", (unsigned long)got, in_size[i]);
                return 2;
            }
        }
        H_RUN(arena);
        for (i = 0; i < sizeof out_off / sizeof out_off[0]; ++i) {
            if (fwrite(arena + out_off[i], 1, (size_t)out_size[i], stdout) != (size_t)out_size[i]) {
                return 3;
            }
        }
    }
}
