/* Reset for QEMU riscv32 virt (-bios none: the hart starts in M-mode at the ELF entry): gp and sp,
 * a trap vector that exits with a distinctive code, .data copy, .bss clear, then main. */
#include <stdint.h>
#include <string.h>

#include "mdt_board.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss;
int main(int argc, char **argv);
void mdt_riscv_reset(void);
void mdt_riscv_trap(void);

__asm__(
    "  .section .text.mdt_start,\"ax\",@progbits\n"
    "  .globl _start\n"
    "_start:\n"
    "  .option push\n"
    "  .option norelax\n"
    "  la gp, __global_pointer$\n"
    "  .option pop\n"
    "  la sp, _estack\n"
    "  la t0, mdt_riscv_trap_entry\n"
    "  .option push\n"
    "  .option arch, +zicsr\n"
    "  csrw mtvec, t0\n"
    "  .option pop\n"
    "  call mdt_riscv_reset\n"
    "1: j 1b\n"
    "  .balign 4\n" /* mtvec direct mode: 4-byte aligned */
    "mdt_riscv_trap_entry:\n"
    "  la sp, _estack\n"
    "  call mdt_riscv_trap\n"
    "2: j 2b\n"
    "  .text\n");

void mdt_riscv_trap(void)
{
    /* A fault (illegal instruction, misaligned access the core traps, ...): stop with exit code 99. */
    mdt_board_exit(99);
}

void mdt_riscv_reset(void)
{
    memcpy(&_sdata, &_sidata, (uint32_t)((uint8_t *)&_edata - (uint8_t *)&_sdata));
    memset(&_sbss, 0, (uint32_t)((uint8_t *)&_ebss - (uint8_t *)&_sbss));
    mdt_board_exit(main(0, 0));
}
