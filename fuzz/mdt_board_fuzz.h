/* The fuzz board layer's side door for the harnesses (fuzz/mdt_board_fuzz.c). */
#ifndef MDT_BOARD_FUZZ_H
#define MDT_BOARD_FUZZ_H

#include <setjmp.h>
#include <stdint.h>

#include "mdt_board.h"

#define MDT_FUZZ_TX_BYTES (1u << 20)

extern uint8_t mdt_fuzz_tx[MDT_FUZZ_TX_BYTES];
extern uint32_t mdt_fuzz_tx_len;
extern int mdt_fuzz_exit_code;

/* The next run reads `data` (then MDT_READ_CLOSED); a pause (timeout) comes before every `every`-th byte (0: none);
 * mdt_board_exit longjmps to `on_exit`. */
void mdt_fuzz_board_start(const uint8_t *data, uint32_t length, uint32_t every, jmp_buf *on_exit);

#endif
