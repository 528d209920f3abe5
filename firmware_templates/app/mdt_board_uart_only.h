/* The host-file part of the board API (mdt_board.h) for boards that have no host files: a real
 * board without a debugger attached, where semihosting's BKPT would fault the core. The host falls
 * back to sending samples over the UART when HOST_OPEN answers UNSUPPORTED.
 *
 * Holds the three definitions, so that the board layers without host files share one copy:
 * include it from exactly one .c of the layer (its mdt_board_<family>.c). */
#ifndef MDT_BOARD_UART_ONLY_H
#define MDT_BOARD_UART_ONLY_H

#include "mdt_board.h"

int mdt_board_host_open(const char *path, uint32_t path_len, uint32_t *file_len)
{
    (void)path;
    (void)path_len;
    (void)file_len;
    return MDT_HOST_UNSUPPORTED;
}

int mdt_board_host_read(int handle, uint32_t offset, uint8_t *buf, uint32_t n)
{
    (void)handle;
    (void)offset;
    (void)buf;
    (void)n;
    return MDT_HOST_UNSUPPORTED;
}

void mdt_board_host_close(int handle)
{
    (void)handle;
}

#endif
