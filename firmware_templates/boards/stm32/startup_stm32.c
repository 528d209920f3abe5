/* Reset and vector table for the STM32 board layer: FPU on (CPACR), on the Cortex-M7 parts the
 * I- and D-caches (invalidated first, Armv7-M ARM B2.2.7 / Cortex-M7 TRM 5.3), .data copy, .bss
 * clear, the clock tree (mdt_board_stm32.c), then main. The table is sized for the part's
 * interrupt lines (mdt_board_stm32.h); every entry that is not ours stops in Default_Handler.
 * The reserved stack (link.ld: _sstack .. _estack) is painted with MDT_STACK_PAINT first thing at
 * reset; mdt_stack_used() finds the deepest painted word overwritten since (the high-water mark:
 * read it from a debugger, or call it from the app). */
#include <stdint.h>
#include <string.h>

#include "mdt_board_stm32.h"

extern uint32_t _estack, _sstack, _sidata, _sdata, _edata, _sbss, _ebss;
int main(int argc, char **argv);
void Reset_Handler(void);
void mdt_stack_paint(void);
uint32_t mdt_stack_used(void);

#define REG(addr) (*(volatile uint32_t *)(addr))
#define SCB_VTOR REG(0xE000ED08u)
#define SCB_CCR REG(0xE000ED14u)
#define SCB_CPACR REG(0xE000ED88u)
#define SCB_CCSIDR REG(0xE000ED80u)
#define SCB_CSSELR REG(0xE000ED84u)
#define SCB_ICIALLU REG(0xE000EF50u)
#define SCB_DCISW REG(0xE000EF60u)
#define CCR_DC (1u << 16)
#define CCR_IC (1u << 17)

typedef void (*vector_t)(void);
extern const vector_t mdt_vectors[16u + MDT_IRQ_COUNT];

static void barrier(void)
{
    __asm__ volatile("dsb\n isb" ::: "memory");
}

#if MDT_STM32_CORTEX_M7
static void caches_enable(void)
{
    uint32_t ccsidr, sets, ways, set, way, line_shift, way_shift;
    barrier();
    SCB_ICIALLU = 0u; /* invalidate the whole I-cache */
    barrier();
    SCB_CCR |= CCR_IC;
    barrier();
    SCB_CSSELR = 0u; /* level 1 data cache */
    barrier();
    ccsidr = SCB_CCSIDR;
    sets = (ccsidr >> 13) & 0x7FFFu;     /* NumSets - 1 */
    ways = (ccsidr >> 3) & 0x3FFu;       /* Associativity - 1 */
    line_shift = (ccsidr & 0x7u) + 4u;   /* log2(line bytes) */
    way_shift = ways ? (uint32_t)__builtin_clz(ways) : 0u;
    for (set = 0; set <= sets; set++) {
        for (way = 0; way <= ways; way++) {
            SCB_DCISW = (way << way_shift) | (set << line_shift); /* invalidate by set/way */
        }
    }
    barrier();
    SCB_CCR |= CCR_DC;
    barrier();
}
#endif

void Default_Handler(void)
{
    /* A fault or an interrupt nobody enabled: stop here (a debugger finds the core in this loop). */
    __asm__ volatile("cpsid i" ::: "memory");
    for (;;) {
    }
}

#define MDT_STACK_PAINT 0x5AC3A53Cu

/* Paint [_sstack, sp - 64): a plain word loop (volatile: no memset call whose frame it would paint
 * over); the 64 bytes below sp are left for this function's own frame. */
void mdt_stack_paint(void)
{
    volatile uint32_t *p = &_sstack;
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    sp -= 16;
    while (p < sp) {
        *p++ = MDT_STACK_PAINT;
    }
}

/* Bytes from the top of the stack down to the deepest painted word overwritten since the last paint. */
uint32_t mdt_stack_used(void)
{
    const volatile uint32_t *p = &_sstack;
    while (p < &_estack && *p == MDT_STACK_PAINT) {
        p++;
    }
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

void Reset_Handler(void)
{
    mdt_stack_paint();
    SCB_CPACR |= 0xFu << 20; /* CP10/CP11 full access: the FPU */
    barrier();
    SCB_VTOR = (uint32_t)(uintptr_t)mdt_vectors;
#if MDT_STM32_CORTEX_M7
    caches_enable();
#endif
    memcpy(&_sdata, &_sidata, (uint32_t)((uint8_t *)&_edata - (uint8_t *)&_sdata));
    memset(&_sbss, 0, (uint32_t)((uint8_t *)&_ebss - (uint8_t *)&_sbss));
    mdt_stm32_clock_init();
    (void)main(0, 0);
    for (;;) {
    }
}

__attribute__((section(".isr_vector"), used)) const vector_t mdt_vectors[16u + MDT_IRQ_COUNT] = {
    (vector_t)(uintptr_t)&_estack, /* initial SP: the top of the reserved stack */
    Reset_Handler,
    Default_Handler, /* NMI */
    Default_Handler, /* HardFault */
    Default_Handler, /* MemManage */
    Default_Handler, /* BusFault */
    Default_Handler, /* UsageFault */
    0, 0, 0, 0,
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMonitor */
    0,
    Default_Handler, /* PendSV */
    SysTick_Handler,
    MDT_IRQ_VECTORS
};
