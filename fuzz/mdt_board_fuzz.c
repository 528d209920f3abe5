/* Board layer for the fuzz harnesses: the "UART" is a byte buffer the harness fills from the
 * fuzzer's input, answers go to a buffer the harness checks, and the end of the program
 * (mdt_board_exit, EXIT or the end of the input) jumps back into the harness. */
#include "mdt_board_fuzz.h"

#include <string.h>

#include "microt.h"

/* The host file: any path that starts with 'f' opens FUZZ_FILE_SAMPLES whole samples of a fixed
 * pattern (others: no such file); handles of an earlier input read as gone. */
#define FUZZ_FILE_SAMPLES 4u
static int file_generation;

static const uint8_t *rx;
static uint32_t rx_len, rx_pos, timeout_every, timed_out_at;
static jmp_buf *exit_to;
static uint64_t ticks;

uint8_t mdt_fuzz_tx[MDT_FUZZ_TX_BYTES];
uint32_t mdt_fuzz_tx_len;
int mdt_fuzz_exit_code;

void mdt_fuzz_board_start(const uint8_t *data, uint32_t length, uint32_t every, jmp_buf *on_exit)
{
    rx = data;
    rx_len = length;
    rx_pos = 0;
    timeout_every = every;
    timed_out_at = 0xFFFFFFFFu;
    exit_to = on_exit;
    mdt_fuzz_tx_len = 0;
    mdt_fuzz_exit_code = -1;
    file_generation = (file_generation + 1) & 0x3FFF;
}

void mdt_board_init(int argc, char **argv)
{
    (void)argc;
    (void)argv;
}

int mdt_board_read_byte(uint32_t timeout_ms)
{
    (void)timeout_ms;
    if (timeout_every != 0 && rx_pos % timeout_every == 0 && timed_out_at != rx_pos) {
        timed_out_at = rx_pos; /* a pause on the line before every `every`-th byte (once) */
        return MDT_READ_TIMEOUT;
    }
    if (rx_pos >= rx_len) {
        return MDT_READ_CLOSED;
    }
    return rx[rx_pos++];
}

void mdt_board_write(const uint8_t *data, uint32_t length)
{
    uint32_t room = MDT_FUZZ_TX_BYTES - mdt_fuzz_tx_len;
    if (length > room) {
        length = room; /* the harness checks what fits; later answers are only counted */
    }
    memcpy(&mdt_fuzz_tx[mdt_fuzz_tx_len], data, length);
    mdt_fuzz_tx_len += length;
}

uint64_t mdt_board_counter(void)
{
    ticks += 3u;
    return ticks;
}

void mdt_board_counter_align(void)
{
}

uint8_t mdt_board_counter_unit(void)
{
    return MDT_UNIT_CYCLES;
}

uint32_t mdt_board_clock_hz(void)
{
    return 1000000u;
}

void mdt_board_exit(int code)
{
    mdt_fuzz_exit_code = code;
    longjmp(*exit_to, 1);
}

int mdt_board_host_open(const char *path, uint32_t path_len, uint32_t *file_len)
{
    if (path_len == 0 || path[0] != 'f' || path[path_len] != 0) {
        return MDT_HOST_NO_FILE;
    }
    *file_len = FUZZ_FILE_SAMPLES * (uint32_t)MICROT_INPUT_SIZE;
    return file_generation;
}

int mdt_board_host_read(int handle, uint32_t offset, uint8_t *buf, uint32_t n)
{
    uint32_t i;
    if (handle != file_generation || offset > FUZZ_FILE_SAMPLES * (uint32_t)MICROT_INPUT_SIZE ||
        n > FUZZ_FILE_SAMPLES * (uint32_t)MICROT_INPUT_SIZE - offset) {
        return MDT_HOST_NO_FILE;
    }
    for (i = 0; i < n; i++) {
        buf[i] = (uint8_t)((offset + i) * 37u + 11u);
    }
    return 0;
}

void mdt_board_host_close(int handle)
{
    (void)handle;
}
