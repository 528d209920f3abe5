/* The board API: the only things the portable app needs from a board family.
 * One small file per family implements it (firmware_templates/boards/<family>/). */
#ifndef MDT_BOARD_H
#define MDT_BOARD_H

#include <stdint.h>

#define MDT_READ_TIMEOUT (-1) /* no byte arrived within the timeout */
#define MDT_READ_CLOSED (-2)  /* the link is gone for good (host build: pty hung up) */

#define MDT_UNIT_INSTRUCTIONS 0u
#define MDT_UNIT_CYCLES 1u
#define MDT_UNIT_NS 2u

void mdt_board_init(int argc, char **argv);
/* One byte (0..255), MDT_READ_TIMEOUT after timeout_ms without one, or MDT_READ_CLOSED. */
int mdt_board_read_byte(uint32_t timeout_ms);
void mdt_board_write(const uint8_t *data, uint32_t length);
/* Free-running 64-bit counter in mdt_board_counter_unit() units. */
uint64_t mdt_board_counter(void);
/* Wait for the next counter tick, so that deltas measured from here on are reproducible where the
 * counter is coarser than one unit (a no-op where it does not matter). */
void mdt_board_counter_align(void);
uint8_t mdt_board_counter_unit(void);
uint32_t mdt_board_clock_hz(void);
void mdt_board_exit(int code);

#endif
