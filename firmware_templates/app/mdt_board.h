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

/* Read-only access to a file on the host that runs the board (the emulator's semihosting, the
 * host build's file system): a fast path for samples that bypasses the UART. Statuses: */
#define MDT_HOST_UNSUPPORTED (-1) /* no host files on this board (a real board without a debugger) */
#define MDT_HOST_NO_FILE (-2)     /* cannot open, size or read the file (or a short read) */
/* Open `path` (path_len bytes, path[path_len] == 0) for reading: a handle >= 0 and *file_len its
 * size in bytes, or a status above. */
int mdt_board_host_open(const char *path, uint32_t path_len, uint32_t *file_len);
/* Read exactly n bytes from `offset` of an open file into buf: 0, or a status above. */
int mdt_board_host_read(int handle, uint32_t offset, uint8_t *buf, uint32_t n);
void mdt_board_host_close(int handle);

#endif
