/* Board layer for QEMU mps2-an386 (Cortex-M4F, CMSDK peripherals): UART0 at 0x40004000, SysTick
 * at the 25 MHz core clock widened to 64 bits by its wrap interrupt, semihosting exit.
 * Under `-icount shift=0` one instruction takes 1 ns, so one 25 MHz tick is 40 instructions: the
 * counter is reported in retired instructions (not cycles: QEMU models no pipeline). */
#include <stdint.h>

#include "mdt_board.h"
#include "mdt_config.h"

#define REG(addr) (*(volatile uint32_t *)(addr))

/* The other CMSDK machines of QEMU (microt_deploy/evaluate/cores.py) pass their UART0 base and
 * SysTick clock: the secure aliases on the TrustZone machines, 20 / 32 MHz there. */
#ifndef MDT_CMSDK_UART0_BASE
#define MDT_CMSDK_UART0_BASE 0x40004000u
#endif
#define UART0_BASE MDT_CMSDK_UART0_BASE
#define UART_DATA REG(UART0_BASE + 0x00u)
#define UART_STATE REG(UART0_BASE + 0x04u)
#define UART_CTRL REG(UART0_BASE + 0x08u)
#define UART_INTCLEAR REG(UART0_BASE + 0x0Cu)
#define UART_BAUDDIV REG(UART0_BASE + 0x10u)
#define UART_STATE_TXFULL 0x1u
#define UART_STATE_RXFULL 0x2u

#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define SCB_ICSR REG(0xE000ED04u)
#define ICSR_PENDSTSET (1u << 26)
#define ICSR_PENDSTCLR (1u << 25)
#define NVIC_ISER0 REG(0xE000E100u)
#define NVIC_ICER0 REG(0xE000E180u)
#define NVIC_ICPR0 REG(0xE000E280u)
#define UART0_RX_IRQ 0u

#ifndef MDT_CMSDK_SYSTICK_HZ
#define MDT_CMSDK_SYSTICK_HZ 25000000u
#endif
#define SYSTICK_HZ MDT_CMSDK_SYSTICK_HZ
#define SYSTICK_RELOAD 0x00FFFFFFu
/* 1e9 ns/s / SYSTICK_HZ ticks/s under -icount shift=0, as a fraction (40/1 at 25 MHz, 125/4 at 32) */
#ifndef MDT_CMSDK_INSN_PER_TICK_NUM
#define MDT_CMSDK_INSN_PER_TICK_NUM 40u
#define MDT_CMSDK_INSN_PER_TICK_DEN 1u
#endif

static volatile uint32_t systick_wraps;
static uint64_t tick_base; /* ticks counted before the last restart of SysTick */

void SysTick_Handler(void);
void UART0_RX_Handler(void);

void SysTick_Handler(void)
{
    systick_wraps++;
}

void UART0_RX_Handler(void)
{
    UART_INTCLEAR = 0x2u; /* only wakes the core from WFI; the byte is read by the main loop */
}

static uint32_t irq_save(void)
{
    uint32_t primask;
    __asm__ volatile("mrs %0, primask\n cpsid i" : "=r"(primask)::"memory");
    return primask;
}

static void irq_restore(uint32_t primask)
{
    __asm__ volatile("msr primask, %0" ::"r"(primask) : "memory");
}

static uint64_t ticks(void)
{
    uint32_t primask = irq_save();
    uint32_t hi = systick_wraps;
    uint32_t lo = SYST_CVR;
    if (SCB_ICSR & ICSR_PENDSTSET) { /* wrapped, handler not run yet: read after the wrap */
        lo = SYST_CVR;
        hi++;
    }
    irq_restore(primask);
    if (lo == 0u && hi == 0u) {
        return tick_base; /* just restarted: the reload value arrives with the first tick */
    }
    return tick_base + ((uint64_t)hi << 24) + (uint64_t)(SYSTICK_RELOAD - lo);
}

void mdt_board_init(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    UART_BAUDDIV = SYSTICK_HZ / MDT_BAUD; /* >= 16: checked at build time (microt_deploy/link/baud.py) */
    UART_CTRL = 0x1u | 0x2u | 0x8u; /* TX, RX, RX interrupt (enabled in the NVIC only while waiting) */
    SYST_RVR = SYSTICK_RELOAD;
    SYST_CVR = 0u;
    SYST_CSR = 0x7u; /* enable, interrupt, core clock */
}

int mdt_board_read_byte(uint32_t timeout_ms)
{
    uint64_t deadline = ticks() + (uint64_t)timeout_ms * (SYSTICK_HZ / 1000u);
    for (;;) {
        /* Masked check-then-sleep: a byte arriving in between still wakes WFI. The RX interrupt
         * is enabled only around the WFI, so a byte that arrives while a graph runs never takes
         * the handler inside a measured span (counts stay reproducible). */
        uint32_t primask = irq_save();
        if (UART_STATE & UART_STATE_RXFULL) {
            irq_restore(primask);
            return (int)(UART_DATA & 0xFFu);
        }
        NVIC_ISER0 = 1u << UART0_RX_IRQ;
        __asm__ volatile("wfi" ::: "memory");
        NVIC_ICER0 = 1u << UART0_RX_IRQ;
        UART_INTCLEAR = 0x2u; /* the wake-up is consumed here: the handler never runs */
        NVIC_ICPR0 = 1u << UART0_RX_IRQ;
        irq_restore(primask);
        if (ticks() >= deadline) {
            return MDT_READ_TIMEOUT;
        }
    }
}

void mdt_board_write(const uint8_t *data, uint32_t length)
{
    uint32_t i;
    for (i = 0; i < length; i++) {
        while (UART_STATE & UART_STATE_TXFULL) {
        }
        UART_DATA = data[i];
    }
}

uint64_t mdt_board_counter(void)
{
    return ticks() * MDT_CMSDK_INSN_PER_TICK_NUM / MDT_CMSDK_INSN_PER_TICK_DEN;
}

void mdt_board_counter_align(void)
{
    /* The guest idles (WFI) between commands for a real-time-dependent while, so the phase of the
     * 40-instruction tick would differ from run to run. Restarting SysTick here puts its tick
     * edges (and wraps) at fixed instruction counts from this point: deltas are reproducible. */
    uint32_t primask = irq_save();
    uint64_t now = ticks();
    SYST_CSR = 0u;
    SYST_CVR = 0u;
    SCB_ICSR = ICSR_PENDSTCLR;
    systick_wraps = 0u;
    tick_base = now + 1u; /* never behind an earlier reading */
    SYST_CSR = 0x7u;
    irq_restore(primask);
}

uint8_t mdt_board_counter_unit(void)
{
    return MDT_UNIT_INSTRUCTIONS;
}

uint32_t mdt_board_clock_hz(void)
{
    return MDT_CLOCK_HZ;
}

/* ARM semihosting (QEMU -semihosting-config enable=on,target=native): r0 the operation, r1 its
 * parameter block; the answer comes back in r0. The host files are the emulator's. */
#define SYS_OPEN 0x01u
#define SYS_CLOSE 0x02u
#define SYS_READ 0x06u
#define SYS_SEEK 0x0Au
#define SYS_FLEN 0x0Cu
#define OPEN_MODE_RB 1u /* "rb" */

static int32_t semihost(uint32_t op, volatile uint32_t *block)
{
    register uint32_t r0 __asm__("r0") = op;
    register volatile uint32_t *r1 __asm__("r1") = block;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return (int32_t)r0;
}

int mdt_board_host_open(const char *path, uint32_t path_len, uint32_t *file_len)
{
    volatile uint32_t block[3];
    int32_t h, n;
    block[0] = (uint32_t)path;
    block[1] = OPEN_MODE_RB;
    block[2] = path_len;
    h = semihost(SYS_OPEN, block);
    if (h < 0) {
        return MDT_HOST_NO_FILE;
    }
    block[0] = (uint32_t)h;
    n = semihost(SYS_FLEN, block);
    if (n < 0) {
        mdt_board_host_close((int)h);
        return MDT_HOST_NO_FILE;
    }
    *file_len = (uint32_t)n;
    return (int)h;
}

int mdt_board_host_read(int handle, uint32_t offset, uint8_t *buf, uint32_t n)
{
    volatile uint32_t block[3];
    if (handle < 0) {
        return MDT_HOST_NO_FILE;
    }
    block[0] = (uint32_t)handle;
    block[1] = offset;
    if (semihost(SYS_SEEK, block) != 0) {
        return MDT_HOST_NO_FILE;
    }
    block[0] = (uint32_t)handle;
    block[1] = (uint32_t)buf;
    block[2] = n;
    /* SYS_READ answers the number of bytes NOT read: 0 is a whole read. */
    return semihost(SYS_READ, block) == 0 ? 0 : MDT_HOST_NO_FILE;
}

void mdt_board_host_close(int handle)
{
    volatile uint32_t block[1];
    if (handle >= 0) {
        block[0] = (uint32_t)handle;
        (void)semihost(SYS_CLOSE, block);
    }
}

void mdt_board_exit(int code)
{
    /* Semihosting SYS_EXIT_EXTENDED: {ADP_Stopped_ApplicationExit, code}. */
    volatile uint32_t block[2];
    block[0] = 0x20026u;
    block[1] = (uint32_t)code;
    __asm__ volatile("mov r0, #0x20\n mov r1, %0\n bkpt 0xAB" ::"r"(block) : "r0", "r1", "memory");
    for (;;) {
    }
}
