/* Reset and vector table for mps2-an386: the stack painted, .data copy, .bss clear, FPU on (CPACR),
 * then main. The stack grows down from the top of RAM over the free RAM above .bss: every word
 * there is painted with MDT_STACK_PAINT at reset, and mdt_stack_used() finds the deepest one
 * overwritten since (the stack's high-water mark; the bench harness reports it per graph). */
#include <stdint.h>
#include <string.h>

extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss;
int main(int argc, char **argv);
void Reset_Handler(void);
void Default_Handler(void);
void mdt_stack_paint(void);
uint32_t mdt_stack_used(void);
void SysTick_Handler(void);
void UART0_RX_Handler(void);

void Default_Handler(void)
{
    /* A fault or stray interrupt: stop with a distinctive exit code instead of hanging. */
    volatile uint32_t block[2];
    block[0] = 0x20026u;
    block[1] = 99u;
    __asm__ volatile("mov r0, #0x20\n mov r1, %0\n bkpt 0xAB" ::"r"(block) : "r0", "r1", "memory");
    for (;;) {
    }
}

#define MDT_STACK_PAINT 0x5AC3A53Cu

/* Paint [end of .bss, sp - 64): a plain word loop (volatile: no memset call whose frame it would
 * paint over); the 64 bytes below sp are left for this function's own frame. */
void mdt_stack_paint(void)
{
    volatile uint32_t *p = &_ebss;
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
    const volatile uint32_t *p = &_ebss;
    while (p < &_estack && *p == MDT_STACK_PAINT) {
        p++;
    }
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

void Reset_Handler(void)
{
    mdt_stack_paint();
#if defined(__ARM_FP) /* an M3 (mps2-an385) has no FPU and faults on CPACR */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: CP10/CP11 full access */
    __asm__ volatile("dsb\n isb" ::: "memory");
#endif
    memcpy(&_sdata, &_sidata, (uint32_t)((uint8_t *)&_edata - (uint8_t *)&_sdata));
    memset(&_sbss, 0, (uint32_t)((uint8_t *)&_ebss - (uint8_t *)&_sbss));
    (void)main(0, 0);
    for (;;) {
    }
}

typedef void (*vector_t)(void);

__attribute__((section(".isr_vector"), used)) const vector_t mdt_vectors[16 + 32] = {
    (vector_t)(uintptr_t)&_estack,
    Reset_Handler,
    Default_Handler, /* NMI */
    Default_Handler, /* HardFault */
    Default_Handler, /* MemManage */
    Default_Handler, /* BusFault */
    Default_Handler, /* UsageFault */
    0, 0, 0, 0,
    Default_Handler, /* SVC */
    Default_Handler, /* DebugMon */
    0,
    Default_Handler, /* PendSV */
    SysTick_Handler,
    UART0_RX_Handler, /* IRQ 0: UART0 RX */
};
