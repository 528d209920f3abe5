/* Board layer for QEMU riscv32 virt (the portable path of ESP32-C3 / C6-class RISC-V parts): the
 * NS16550A UART at 0x10000000, the counter from the minstret / minstreth CSRs (retired instructions;
 * QEMU counts them exactly under -icount), semihosting exit. No host files, no input. */
#include <stdint.h>

#include "mdt_board.h"
#include "mdt_config.h"

#define UART_BASE 0x10000000u
#define UART_THR (*(volatile uint8_t *)(UART_BASE + 0u))
#define UART_LSR (*(volatile uint8_t *)(UART_BASE + 5u))
#define LSR_THRE 0x20u

void mdt_board_init(int argc, char **argv)
{
    (void)argc;
    (void)argv;
}

int mdt_board_read_byte(uint32_t timeout_ms)
{
    (void)timeout_ms;
    return MDT_READ_TIMEOUT;
}

void mdt_board_write(const uint8_t *data, uint32_t length)
{
    uint32_t i;
    for (i = 0; i < length; i++) {
        while ((UART_LSR & LSR_THRE) == 0u) {
        }
        UART_THR = data[i];
    }
}

uint64_t mdt_board_counter(void)
{
    uint32_t hi, lo, hi2;
    do { /* the high word read again: a carry between the two reads is seen */
        /* Zicsr is its own extension to binutils 2.38+: enabled here, the kernels stay rv32imc */
        __asm__ volatile(".option push\n .option arch, +zicsr\n"
                         "csrr %0, minstreth\n csrr %1, minstret\n csrr %2, minstreth\n .option pop"
                         : "=r"(hi), "=r"(lo), "=r"(hi2));
    } while (hi != hi2);
    return ((uint64_t)hi << 32) | lo;
}

void mdt_board_counter_align(void)
{
    /* one-instruction resolution: nothing to align */
}

uint8_t mdt_board_counter_unit(void)
{
    return MDT_UNIT_INSTRUCTIONS;
}

uint32_t mdt_board_clock_hz(void)
{
    return MDT_CLOCK_HZ;
}

/* No host files on this layer (the bench harness reads none): the shared stubs. */
#include "mdt_board_uart_only.h"

void mdt_board_exit(int code)
{
    /* RISC-V semihosting: SYS_EXIT_EXTENDED (0x20) with {ADP_Stopped_ApplicationExit, code}, through
     * the uncompressed slli / ebreak / srai sequence the debugger (QEMU) recognises. */
    volatile uint32_t block[2];
    register uint32_t a0 __asm__("a0") = 0x20u;
    register volatile uint32_t *a1 __asm__("a1") = block;
    block[0] = 0x20026u;
    block[1] = (uint32_t)code;
    __asm__ volatile(".option push\n"
                     ".option norvc\n"
                     ".balign 16\n"
                     "slli zero, zero, 0x1f\n"
                     "ebreak\n"
                     "srai zero, zero, 7\n"
                     ".option pop\n"
                     : "+r"(a0)
                     : "r"(a1)
                     : "memory");
    for (;;) {
    }
}
