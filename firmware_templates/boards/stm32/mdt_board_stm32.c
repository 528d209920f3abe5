/* Board layer for STM32 boards, bare metal (nothing but the C compiler): the protocol on the
 * ST-LINK virtual COM port at 115200 8N1, the system clock from the PLL values in
 * mdt_board_stm32.h (rendered from the board's data file), and a 64-bit counter.
 *
 * Series: L4 (RM0351, STM32L47x/L4x5), L4+ (RM0432, STM32L4R/S), F7 (RM0385, STM32F74x/75x),
 * H7 (RM0455, STM32H7A3/B3). The register addresses and field encodings below are written from
 * those manuals (section numbers name where each fact comes from) and from the Armv7-M
 * Architecture Reference Manual for the core peripherals (SysTick, NVIC, SCB, DWT).
 *
 * Counter: the DWT cycle counter, widened to 64 bits (reported in cycles). QEMU's
 * b-l475e-iot01a machine has no DWT (CYCCNT reads 0): init detects that the counter does not
 * advance and falls back to SysTick at the core clock, reported as instructions (QEMU runs with
 * `-icount shift=0`: one instruction per ns of virtual time, so ticks * 1e9 / core_hz counts
 * retired instructions). That fallback exists only for the emulator; silicon always has the DWT.
 * Checked on QEMU 10.0: SysTick's processor clock there is the RCC model's HCLK (it follows the
 * PLL switch and the AHB prescaler: 4 MHz after reset, 80 MHz after clock init), and its external
 * reference clock is HCLK / 8. */
#include <stdint.h>

#include "mdt_board.h"
#include "mdt_board_stm32.h"
#include "mdt_config.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define BIT(n) (1u << (n))

/* ---- Cortex-M core (Armv7-M ARM B3.3 SysTick, B3.4 NVIC, B3.2 SCB, C1.8 DWT, C1.6 DEMCR) ---- */
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define SYST_CSR_ENABLE BIT(0)
#define SYST_CSR_TICKINT BIT(1)
#define SYST_CSR_CLKSOURCE BIT(2) /* 1: the processor clock */
#define SCB_ICSR REG(0xE000ED04u)
#define ICSR_PENDSTSET BIT(26)
#define ICSR_PENDSTCLR BIT(25)
#define NVIC_ISER(n) REG(0xE000E100u + 4u * (n))
#define NVIC_ICPR(n) REG(0xE000E280u + 4u * (n))
#define DEMCR REG(0xE000EDFCu)
#define DEMCR_TRCENA BIT(24)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CTRL_CYCCNTENA BIT(0)
#define DWT_CYCCNT REG(0xE0001004u)
#define DWT_LAR REG(0xE0001FB0u) /* Cortex-M7: the DWT is write-locked until this key is written */
#define DWT_LAR_KEY 0xC5ACCE55u

/* Bounded waits: a flag the RM says to wait for, given far more polls than its worst-case delay
 * (HSE start-up, PLL lock, regulator settling: at most a few ms) at the slowest clock we poll at.
 * QEMU models neither PWR nor the FLASH interface: their flags never change there. */
#define POLLS 2000000u
/* The new flash latency reads back at once on silicon; few polls keep boot quick under QEMU,
 * where each read of the unmodelled FLASH interface is slow and never shows the value. */
#define FLASH_POLLS 64u

/* Bus prescaler field codes (the same on every series): AHB /1 0xxx, /2 1000 ... /512 1111;
 * APB /1 0xx, /2 100, /4 101, /8 110, /16 111. */
#define HPRE_CODE(d) ((d) == 1u ? 0u : (d) == 2u ? 8u : (d) == 4u ? 9u : (d) == 8u ? 10u : (d) == 16u ? 11u : 12u)
#define PPRE_CODE(d) ((d) == 1u ? 0u : (d) == 2u ? 4u : (d) == 4u ? 5u : (d) == 8u ? 6u : 7u)

#if defined(MDT_STM32_L4)
/* ======== L4 (RM0351) and L4+ (RM0432): same register map, L4+ differences marked ======== */
#define RESET_HZ 4000000u /* MSI range 6 after reset (RM0351 6.2.3) */
#define RCC_BASE 0x40021000u
#define RCC_CR REG(RCC_BASE + 0x00u)
#define RCC_CFGR REG(RCC_BASE + 0x08u)
#define RCC_PLLCFGR REG(RCC_BASE + 0x0Cu)
#define RCC_AHB2ENR REG(RCC_BASE + 0x4Cu)
#define RCC_APB1ENR1 REG(RCC_BASE + 0x58u)
#define RCC_APB1ENR2 REG(RCC_BASE + 0x5Cu)
#define RCC_APB2ENR REG(RCC_BASE + 0x60u)
#define RCC_CR_PLLON BIT(24)
#define RCC_CR_PLLRDY BIT(25)
#define RCC_CFGR_SW_MASK 0x3u
#define RCC_CFGR_SW_MSI 0x0u
#define RCC_CFGR_SW_PLL 0x3u
#define RCC_CFGR_SWS_SHIFT 2u
#define RCC_CFGR_HPRE_SHIFT 4u
#define RCC_CFGR_PPRE1_SHIFT 8u
#define RCC_CFGR_PPRE2_SHIFT 11u
#define RCC_PLLCFGR_PLLSRC_MSI 0x1u
#define RCC_PLLCFGR_PLLM_SHIFT 4u /* 3 bits on the L47x, 4 bits on the L4+ (M - 1) */
#define RCC_PLLCFGR_PLLN_SHIFT 8u
#define RCC_PLLCFGR_PLLREN BIT(24)
#define RCC_PLLCFGR_PLLR_SHIFT 25u /* 00: /2, 01: /4, 10: /6, 11: /8 */
#define RCC_PLLCFGR_PLLQ_SHIFT 21u
#define RCC_APB1ENR1_PWREN BIT(28)
#define PWR_BASE 0x40007000u
#define PWR_CR2 REG(PWR_BASE + 0x04u)
#define PWR_CR2_IOSV BIT(9) /* VddIO2 valid: port G is powered from VddIO2 (RM0432 5.4.2) */
#define PWR_SR2 REG(PWR_BASE + 0x14u)
#define PWR_SR2_VOSF BIT(10)
#define PWR_CR5 REG(PWR_BASE + 0x80u) /* L4+ only */
#define PWR_CR5_R1MODE BIT(8)         /* 1: range 1 normal, 0: range 1 boost (RM0432 5.4.19) */
#define FLASH_ACR REG(0x40022000u)
#define FLASH_ACR_LATENCY_MASK 0xFu /* 3 bits on the L47x, 4 on the L4+; the top bit is reserved as 0 */
#define FLASH_ACR_PRFTEN BIT(8)
#define FLASH_ACR_ICEN BIT(9)
#define FLASH_ACR_DCEN BIT(10)
#define GPIO_BASE(port) (0x48000000u + 0x400u * (port))
#define GPIO_CLK_ENABLE(port) (RCC_AHB2ENR |= BIT(port))
#define GPIO_CLK_READ() ((void)RCC_AHB2ENR)
#if defined(MDT_UART_USART1)
#define UART_BASE 0x40013800u
#define UART_CLK_ENABLE() (RCC_APB2ENR |= BIT(14), (void)RCC_APB2ENR)
#define UART_ON_APB2 1
#define UART_LP 0
#elif defined(MDT_UART_LPUART1)
#define UART_BASE 0x40008000u
#define UART_CLK_ENABLE() (RCC_APB1ENR2 |= BIT(0), (void)RCC_APB1ENR2)
#define UART_ON_APB2 0
#define UART_LP 1 /* BRR = 256 * f / baud (RM0351 41.4.4) */
#else
#error "mdt_board_stm32.h names a UART this layer does not know for the L4 / L4+"
#endif

#elif defined(MDT_STM32_F7)
/* ======== F7 (RM0385) ======== */
#define RESET_HZ 16000000u /* HSI after reset (RM0385 5.2.2) */
#define RCC_BASE 0x40023800u
#define RCC_CR REG(RCC_BASE + 0x00u)
#define RCC_PLLCFGR REG(RCC_BASE + 0x04u)
#define RCC_CFGR REG(RCC_BASE + 0x08u)
#define RCC_AHB1ENR REG(RCC_BASE + 0x30u)
#define RCC_APB1ENR REG(RCC_BASE + 0x40u)
#define RCC_APB2ENR REG(RCC_BASE + 0x44u)
#define RCC_CR_HSEON BIT(16)
#define RCC_CR_HSERDY BIT(17)
#define RCC_CR_HSEBYP BIT(18)
#define RCC_CR_PLLON BIT(24)
#define RCC_CR_PLLRDY BIT(25)
#define RCC_PLLCFGR_PLLN_SHIFT 6u
#define RCC_PLLCFGR_PLLP_SHIFT 16u /* 00: /2, 01: /4, 10: /6, 11: /8 */
#define RCC_PLLCFGR_PLLSRC_HSE BIT(22)
#define RCC_PLLCFGR_PLLQ_SHIFT 24u
#define RCC_PLLCFGR_FIELDS 0x0F43FFFFu /* M 5:0, N 14:6, P 17:16, SRC 22, Q 27:24; the rest is kept */
#define RCC_CFGR_SW_MASK 0x3u
#define RCC_CFGR_SW_HSI 0x0u
#define RCC_CFGR_SW_PLL 0x2u
#define RCC_CFGR_SWS_SHIFT 2u
#define RCC_CFGR_HPRE_SHIFT 4u
#define RCC_CFGR_PPRE1_SHIFT 10u
#define RCC_CFGR_PPRE2_SHIFT 13u
#define RCC_APB1ENR_PWREN BIT(28)
#define PWR_BASE 0x40007000u
#define PWR_CR1 REG(PWR_BASE + 0x00u)
#define PWR_CR1_VOS_SHIFT 14u /* 11: scale 1 (RM0385 4.4.1) */
#define PWR_CR1_ODEN BIT(16)
#define PWR_CR1_ODSWEN BIT(17)
#define PWR_CSR1 REG(PWR_BASE + 0x04u)
#define PWR_CSR1_ODRDY BIT(16)
#define PWR_CSR1_ODSWRDY BIT(17)
#define FLASH_ACR REG(0x40023C00u)
#define FLASH_ACR_LATENCY_MASK 0xFu
#define FLASH_ACR_PRFTEN BIT(8)
#define FLASH_ACR_ARTEN BIT(9)
#define GPIO_BASE(port) (0x40020000u + 0x400u * (port))
#define GPIO_CLK_ENABLE(port) (RCC_AHB1ENR |= BIT(port))
#define GPIO_CLK_READ() ((void)RCC_AHB1ENR)
#if defined(MDT_UART_USART1)
#define UART_BASE 0x40011000u
#define UART_CLK_ENABLE() (RCC_APB2ENR |= BIT(4), (void)RCC_APB2ENR)
#define UART_ON_APB2 1 /* DCKCFGR2.USART1SEL reset value 00: PCLK2 */
#define UART_LP 0
#else
#error "mdt_board_stm32.h names a UART this layer does not know for the F7"
#endif

#elif defined(MDT_STM32_H7)
/* ======== H7A3/B3 (RM0455) ======== */
#define RESET_HZ 64000000u /* HSI 64 MHz, HSIDIV /1 after reset (RM0455 7.5.2) */
#define RCC_BASE 0x58024400u
#define RCC_CR REG(RCC_BASE + 0x00u)
#define RCC_CFGR REG(RCC_BASE + 0x10u)
#define RCC_CDCFGR1 REG(RCC_BASE + 0x18u) /* CDCPRE 11:8, HPRE 3:0, CDPPRE (APB3) 6:4 */
#define RCC_CDCFGR2 REG(RCC_BASE + 0x1Cu) /* CDPPRE1 (APB1) 6:4, CDPPRE2 (APB2) 10:8 */
#define RCC_SRDCFGR REG(RCC_BASE + 0x20u) /* SRDPPRE (APB4) 6:4 */
#define RCC_PLLCKSELR REG(RCC_BASE + 0x28u)
#define RCC_PLLCFGR REG(RCC_BASE + 0x2Cu)
#define RCC_PLL1DIVR REG(RCC_BASE + 0x30u)
#define RCC_AHB4ENR REG(RCC_BASE + 0xE0u)
#define RCC_APB1LENR REG(RCC_BASE + 0xE8u)
#define RCC_APB2ENR REG(RCC_BASE + 0xF0u)
#define RCC_CR_HSEON BIT(16)
#define RCC_CR_HSERDY BIT(17)
#define RCC_CR_HSEBYP BIT(18)
#define RCC_CR_PLL1ON BIT(24)
#define RCC_CR_PLL1RDY BIT(25)
#define RCC_CFGR_SW_MASK 0x7u
#define RCC_CFGR_SW_HSI 0x0u
#define RCC_CFGR_SW_PLL1 0x3u
#define RCC_CFGR_SWS_SHIFT 3u
#define RCC_PLLCKSELR_PLLSRC_MASK 0x3u
#define RCC_PLLCKSELR_PLLSRC_HSE 0x2u
#define RCC_PLLCKSELR_DIVM1_SHIFT 4u
#define RCC_PLLCKSELR_DIVM1_MASK (0x3Fu << 4)
#define RCC_PLLCFGR_PLL1_MASK 0xFu      /* PLL1FRACEN 0, PLL1VCOSEL 1 (0: wide), PLL1RGE 3:2 */
#define RCC_PLLCFGR_PLL1RGE_SHIFT 2u    /* 00: 1-2 MHz, 01: 2-4, 10: 4-8, 11: 8-16 MHz */
#define RCC_PLLCFGR_DIV1EN_MASK (0x7u << 16)
#define RCC_PLLCFGR_DIVP1EN BIT(16)
#define PWR_BASE 0x58024800u
#define PWR_CSR1 REG(PWR_BASE + 0x04u)
#define PWR_CSR1_ACTVOSRDY BIT(13)
#define PWR_CR3 REG(PWR_BASE + 0x0Cu)
#define PWR_CR3_BYPASS BIT(0)
#define PWR_CR3_LDOEN BIT(1)
#define PWR_CR3_SMPSEN BIT(2)
#define PWR_CR3_SMPSEXTHP BIT(3)
#define PWR_CR3_SMPSLEVEL_MASK (0x3u << 4)
#define PWR_SRDCR REG(PWR_BASE + 0x18u)
#define PWR_SRDCR_VOS_SHIFT 14u /* 00: VOS3 ... 11: VOS0 (on this part, unlike the H743's D3CR) */
#define PWR_SRDCR_VOSRDY BIT(13)
#define FLASH_ACR REG(0x52002000u)
#define FLASH_ACR_LATENCY_MASK 0xFu
#define FLASH_ACR_WRHIGHFREQ_SHIFT 4u
#define GPIO_BASE(port) (0x58020000u + 0x400u * (port))
#define GPIO_CLK_ENABLE(port) (RCC_AHB4ENR |= BIT(port))
#define GPIO_CLK_READ() ((void)RCC_AHB4ENR)
#if defined(MDT_UART_USART3)
#define UART_BASE 0x40004800u
#define UART_CLK_ENABLE() (RCC_APB1LENR |= BIT(18), (void)RCC_APB1LENR)
#define UART_ON_APB2 0 /* CDCCIP2R.USART234578SEL reset value 000: rcc_pclk1 */
#define UART_LP 0
#elif defined(MDT_UART_USART1)
#define UART_BASE 0x40011000u
#define UART_CLK_ENABLE() (RCC_APB2ENR |= BIT(4), (void)RCC_APB2ENR)
#define UART_ON_APB2 1 /* CDCCIP2R.USART16910SEL reset value 000: rcc_pclk2 */
#define UART_LP 0
#else
#error "mdt_board_stm32.h names a UART this layer does not know for the H7"
#endif

#else
#error "mdt_board_stm32.h names no supported series (L4, L4+, F7, H7)"
#endif

/* ---- GPIO (same layout on all four series) ---- */
#define GPIO_MODER(port) REG(GPIO_BASE(port) + 0x00u)
#define GPIO_OSPEEDR(port) REG(GPIO_BASE(port) + 0x08u)
#define GPIO_PUPDR(port) REG(GPIO_BASE(port) + 0x0Cu)
#define GPIO_AFR(port, pin) REG(GPIO_BASE(port) + 0x20u + 4u * ((pin) >> 3))

/* ---- USART / LPUART (the ISR/ICR register set of L4, F7 and H7) ---- */
#define UART_CR1 REG(UART_BASE + 0x00u)
#define UART_CR3 REG(UART_BASE + 0x08u)
#define UART_BRR REG(UART_BASE + 0x0Cu)
#define UART_ISR REG(UART_BASE + 0x1Cu)
#define UART_ICR REG(UART_BASE + 0x20u)
#define UART_RDR REG(UART_BASE + 0x24u)
#define UART_TDR REG(UART_BASE + 0x28u)
#define CR1_UE BIT(0)
#define CR1_RE BIT(2)
#define CR1_TE BIT(3)
#define CR1_RXNEIE BIT(5)
#define CR3_OVRDIS BIT(12) /* a byte arriving over an unread one is lost, never blocks reception */
#define ISR_ORE BIT(3)
#define ISR_RXNE BIT(5)
#define ISR_TC BIT(6)
#define ISR_TXE BIT(7)
#define ICR_ORECF BIT(3)

/* What the clock tree really gave: the reset clock until clock init has switched to the PLL. */
static uint32_t core_hz = RESET_HZ;
static uint32_t uart_kernel_hz = RESET_HZ;

static uint8_t have_dwt;
static volatile uint32_t systick_wraps;
static volatile uint32_t ms_ticks; /* never restarted: read timeouts (CYCCNT stops while the core sleeps) */
static uint32_t systick_reload;
static uint64_t tick_base; /* SysTick fallback: ticks counted before the last restart */
static uint32_t cycles_last;
static uint64_t cycles_high;
static uint32_t ns_mul, ns_div; /* 1e9 / core_hz as a reduced fraction */
static uint32_t ns_shift;       /* log2(ns_div) when it is a power of two (80 MHz: 25 / 2), else 32 */

static int wait_set(volatile uint32_t *reg, uint32_t mask)
{
    uint32_t n;
    for (n = 0; n < POLLS; n++) {
        if ((*reg & mask) == mask) {
            return 1;
        }
    }
    return 0;
}

__attribute__((unused)) static int wait_clear(volatile uint32_t *reg, uint32_t mask)
{
    uint32_t n;
    for (n = 0; n < POLLS; n++) {
        if ((*reg & mask) == 0u) {
            return 1;
        }
    }
    return 0;
}

static int wait_field(volatile uint32_t *reg, uint32_t mask, uint32_t value, uint32_t polls)
{
    uint32_t n;
    for (n = 0; n < polls; n++) {
        if ((*reg & mask) == value) {
            return 1;
        }
    }
    return 0;
}

static void flash_latency(uint32_t acr)
{
    /* Read back until the new latency is in force (RM: before raising the clock). QEMU does not
     * model the FLASH interface (ACR reads 0): the bounded wait then just runs out. */
    FLASH_ACR = acr;
    (void)wait_field(&FLASH_ACR, FLASH_ACR_LATENCY_MASK, acr & FLASH_ACR_LATENCY_MASK, FLASH_POLLS);
}

static void spin(uint32_t n)
{
    volatile uint32_t i;
    for (i = 0; i < n; i++) {
    }
}

#if defined(MDT_STM32_L4)
/* RM0351 6.2.5 / RM0432 6.2.5 (PLL), 3.3.3 (read latency), 5.1.8 (range 1 boost, L4+). */
void mdt_stm32_clock_init(void)
{
    uint32_t cfgr;
    RCC_APB1ENR1 |= RCC_APB1ENR1_PWREN;
    (void)RCC_APB1ENR1; /* the RM's delay after enabling a peripheral clock */
    /* Voltage range 1 (PWR_CR1.VOS = 01) is the reset state: nothing to change for <= 80 MHz. */
    RCC_CR &= ~RCC_CR_PLLON;
    if (!wait_clear(&RCC_CR, RCC_CR_PLLRDY)) {
        return;
    }
    RCC_PLLCFGR = RCC_PLLCFGR_PLLSRC_MSI | ((MDT_PLL_M - 1u) << RCC_PLLCFGR_PLLM_SHIFT)
                  | (MDT_PLL_N << RCC_PLLCFGR_PLLN_SHIFT) | ((MDT_PLL_R / 2u - 1u) << RCC_PLLCFGR_PLLR_SHIFT)
                  | ((MDT_PLL_Q / 2u - 1u) << RCC_PLLCFGR_PLLQ_SHIFT) | RCC_PLLCFGR_PLLREN;
    RCC_CR |= RCC_CR_PLLON;
    if (!wait_set(&RCC_CR, RCC_CR_PLLRDY)) {
        RCC_CR &= ~RCC_CR_PLLON; /* no lock: stay on the 4 MHz MSI */
        return;
    }
#if MDT_L4_BOOST
    /* Above 80 MHz (L4+, RM0432 5.1.8): HCLK / 2 first, then range 1 boost, wait states, switch,
     * >= 1 us, then the final AHB prescaler. */
    RCC_CFGR = (RCC_CFGR & ~(0xFu << RCC_CFGR_HPRE_SHIFT)) | (HPRE_CODE(2u) << RCC_CFGR_HPRE_SHIFT);
    PWR_CR5 &= ~PWR_CR5_R1MODE;
    (void)wait_clear(&PWR_SR2, PWR_SR2_VOSF);
#endif
    flash_latency(MDT_FLASH_LATENCY | FLASH_ACR_PRFTEN | FLASH_ACR_ICEN | FLASH_ACR_DCEN);
    cfgr = RCC_CFGR & ~(RCC_CFGR_SW_MASK | (0x7u << RCC_CFGR_PPRE1_SHIFT) | (0x7u << RCC_CFGR_PPRE2_SHIFT));
    RCC_CFGR = cfgr | (PPRE_CODE(MDT_APB1_DIV) << RCC_CFGR_PPRE1_SHIFT) | (PPRE_CODE(MDT_APB2_DIV) << RCC_CFGR_PPRE2_SHIFT)
               | RCC_CFGR_SW_PLL;
    if (!wait_field(&RCC_CFGR, RCC_CFGR_SW_MASK << RCC_CFGR_SWS_SHIFT, RCC_CFGR_SW_PLL << RCC_CFGR_SWS_SHIFT, POLLS)) {
        RCC_CFGR &= ~(RCC_CFGR_SW_MASK | (0xFu << RCC_CFGR_HPRE_SHIFT) | (0x3Fu << RCC_CFGR_PPRE1_SHIFT));
        RCC_CR &= ~RCC_CR_PLLON;
        return;
    }
#if MDT_L4_BOOST
    spin(200u); /* >= 1 us at 60 MHz */
#endif
    RCC_CFGR = (RCC_CFGR & ~(0xFu << RCC_CFGR_HPRE_SHIFT)) | (HPRE_CODE(MDT_AHB_DIV) << RCC_CFGR_HPRE_SHIFT);
    core_hz = MDT_CLOCK_HZ;
    uart_kernel_hz = MDT_CLOCK_HZ / (UART_ON_APB2 ? MDT_APB2_DIV : MDT_APB1_DIV);
}

#elif defined(MDT_STM32_F7)
/* RM0385 5.2.5 (PLL), 4.1.4 (entering over-drive), 3.3.2 (read latency). */
void mdt_stm32_clock_init(void)
{
    RCC_APB1ENR |= RCC_APB1ENR_PWREN;
    (void)RCC_APB1ENR;
    PWR_CR1 |= 0x3u << PWR_CR1_VOS_SHIFT; /* scale 1 (the reset value; VOS changes only with the PLL off) */
#if defined(MDT_OSC_HSE_BYPASS)
    RCC_CR |= RCC_CR_HSEBYP;
#endif
    RCC_CR |= RCC_CR_HSEON;
    if (!wait_set(&RCC_CR, RCC_CR_HSERDY)) {
        RCC_CR &= ~(RCC_CR_HSEON | RCC_CR_HSEBYP); /* no crystal: stay on the 16 MHz HSI */
        return;
    }
    RCC_PLLCFGR = (RCC_PLLCFGR & ~RCC_PLLCFGR_FIELDS) | MDT_PLL_M | (MDT_PLL_N << RCC_PLLCFGR_PLLN_SHIFT)
                  | ((MDT_PLL_P / 2u - 1u) << RCC_PLLCFGR_PLLP_SHIFT) | RCC_PLLCFGR_PLLSRC_HSE
                  | (MDT_PLL_Q << RCC_PLLCFGR_PLLQ_SHIFT);
    RCC_CR |= RCC_CR_PLLON;
#if MDT_F7_OVERDRIVE
    PWR_CR1 |= PWR_CR1_ODEN;
    if (!wait_set(&PWR_CSR1, PWR_CSR1_ODRDY)) {
        PWR_CR1 &= ~PWR_CR1_ODEN;
        RCC_CR &= ~RCC_CR_PLLON;
        return;
    }
    PWR_CR1 |= PWR_CR1_ODSWEN;
    if (!wait_set(&PWR_CSR1, PWR_CSR1_ODSWRDY)) {
        PWR_CR1 &= ~(PWR_CR1_ODEN | PWR_CR1_ODSWEN);
        RCC_CR &= ~RCC_CR_PLLON;
        return;
    }
#endif
    if (!wait_set(&RCC_CR, RCC_CR_PLLRDY)) {
        RCC_CR &= ~RCC_CR_PLLON;
        return;
    }
    flash_latency(MDT_FLASH_LATENCY | FLASH_ACR_PRFTEN | FLASH_ACR_ARTEN);
    RCC_CFGR = (RCC_CFGR & ~(0xFFFCu)) | (HPRE_CODE(MDT_AHB_DIV) << RCC_CFGR_HPRE_SHIFT)
               | (PPRE_CODE(MDT_APB1_DIV) << RCC_CFGR_PPRE1_SHIFT) | (PPRE_CODE(MDT_APB2_DIV) << RCC_CFGR_PPRE2_SHIFT);
    RCC_CFGR = (RCC_CFGR & ~RCC_CFGR_SW_MASK) | RCC_CFGR_SW_PLL;
    if (!wait_field(&RCC_CFGR, RCC_CFGR_SW_MASK << RCC_CFGR_SWS_SHIFT, RCC_CFGR_SW_PLL << RCC_CFGR_SWS_SHIFT, POLLS)) {
        RCC_CFGR &= ~(0xFFFFu);
        RCC_CR &= ~RCC_CR_PLLON;
        return;
    }
    core_hz = MDT_CLOCK_HZ;
    uart_kernel_hz = MDT_CLOCK_HZ / (UART_ON_APB2 ? MDT_APB2_DIV : MDT_APB1_DIV);
}

#elif defined(MDT_STM32_H7)
#define PLL_REF_HZ (MDT_OSC_HZ / MDT_PLL_M)
#define PLL1RGE (PLL_REF_HZ < 2000000u ? 0u : PLL_REF_HZ < 4000000u ? 1u : PLL_REF_HZ < 8000000u ? 2u : 3u)

static int set_vos(uint32_t field)
{
    PWR_SRDCR = (PWR_SRDCR & ~(0x3u << PWR_SRDCR_VOS_SHIFT)) | (field << PWR_SRDCR_VOS_SHIFT);
    return wait_set(&PWR_SRDCR, PWR_SRDCR_VOSRDY);
}

/* RM0455 6.8.4 (supply configuration), 6.8.6 (voltage scaling), 7.5.5 (PLLs), 4.3.8 (latency). */
void mdt_stm32_clock_init(void)
{
    uint32_t reg;
    /* The supply is chosen once per power-on (PWR_CR3 is write-once); this board's core is wired
     * to the SMPS ("direct SMPS supply": SMPSEN 1, LDOEN 0, BYPASS 0). */
    reg = PWR_CR3 & ~(PWR_CR3_BYPASS | PWR_CR3_LDOEN | PWR_CR3_SMPSEN | PWR_CR3_SMPSEXTHP | PWR_CR3_SMPSLEVEL_MASK);
#if defined(MDT_H7_SUPPLY_SMPS_DIRECT)
    PWR_CR3 = reg | PWR_CR3_SMPSEN;
#elif defined(MDT_H7_SUPPLY_LDO)
    PWR_CR3 = reg | PWR_CR3_LDOEN;
#else
#error "mdt_board_stm32.h names no H7 supply (SMPS_DIRECT or LDO)"
#endif
    if (!wait_set(&PWR_CSR1, PWR_CSR1_ACTVOSRDY)) {
        return;
    }
    /* VOS field 3 - n selects VOSn; VOS0 is entered from VOS1. */
    if (MDT_H7_VOS == 0u && !set_vos(2u)) {
        return;
    }
    if (!set_vos(3u - MDT_H7_VOS)) {
        return;
    }
#if defined(MDT_OSC_HSE_BYPASS)
    RCC_CR |= RCC_CR_HSEBYP; /* the ST-LINK's 8 MHz MCO output drives OSC_IN */
#endif
    RCC_CR |= RCC_CR_HSEON;
    if (!wait_set(&RCC_CR, RCC_CR_HSERDY)) {
        RCC_CR &= ~(RCC_CR_HSEON | RCC_CR_HSEBYP); /* stay on the 64 MHz HSI */
        return;
    }
    RCC_PLLCKSELR = (RCC_PLLCKSELR & ~(RCC_PLLCKSELR_PLLSRC_MASK | RCC_PLLCKSELR_DIVM1_MASK))
                    | (MDT_PLL_M << RCC_PLLCKSELR_DIVM1_SHIFT) | RCC_PLLCKSELR_PLLSRC_HSE;
    RCC_PLLCFGR = (RCC_PLLCFGR & ~(RCC_PLLCFGR_PLL1_MASK | RCC_PLLCFGR_DIV1EN_MASK))
                  | (PLL1RGE << RCC_PLLCFGR_PLL1RGE_SHIFT) | RCC_PLLCFGR_DIVP1EN; /* wide VCO, integer N */
    RCC_PLL1DIVR = (MDT_PLL_N - 1u) | ((MDT_PLL_P - 1u) << 9) | ((MDT_PLL_Q - 1u) << 16) | ((MDT_PLL_R - 1u) << 24);
    RCC_CR |= RCC_CR_PLL1ON;
    if (!wait_set(&RCC_CR, RCC_CR_PLL1RDY)) {
        RCC_CR &= ~RCC_CR_PLL1ON;
        return;
    }
    flash_latency(MDT_FLASH_LATENCY | (MDT_H7_WRHIGHFREQ << FLASH_ACR_WRHIGHFREQ_SHIFT));
    RCC_CDCFGR1 = (RCC_CDCFGR1 & ~0xF7Fu) | HPRE_CODE(MDT_AHB_DIV) | (PPRE_CODE(MDT_APB3_DIV) << 4);
    RCC_CDCFGR2 = (RCC_CDCFGR2 & ~0x770u) | (PPRE_CODE(MDT_APB1_DIV) << 4) | (PPRE_CODE(MDT_APB2_DIV) << 8);
    RCC_SRDCFGR = (RCC_SRDCFGR & ~0x70u) | (PPRE_CODE(MDT_APB4_DIV) << 4);
    RCC_CFGR = (RCC_CFGR & ~RCC_CFGR_SW_MASK) | RCC_CFGR_SW_PLL1;
    if (!wait_field(&RCC_CFGR, RCC_CFGR_SW_MASK << RCC_CFGR_SWS_SHIFT, RCC_CFGR_SW_PLL1 << RCC_CFGR_SWS_SHIFT, POLLS)) {
        RCC_CFGR &= ~RCC_CFGR_SW_MASK;
        RCC_CDCFGR1 &= ~0xF7Fu;
        RCC_CDCFGR2 &= ~0x770u;
        RCC_SRDCFGR &= ~0x70u;
        RCC_CR &= ~RCC_CR_PLL1ON;
        return;
    }
    core_hz = MDT_CLOCK_HZ;
    uart_kernel_hz = MDT_CLOCK_HZ / (UART_ON_APB2 ? MDT_APB2_DIV : MDT_APB1_DIV);
}
#endif

/* ---- interrupts, counter ---- */

void SysTick_Handler(void);
void mdt_uart_irq_handler(void);

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

/* Widening the 32-bit CYCCNT needs a reading at least once per wrap (15 s at 280 MHz): every
 * counter read does it, and so does the 1 kHz SysTick, so a long stage cannot lose a wrap. */
static uint64_t cycles(void)
{
    uint32_t primask = irq_save();
    uint32_t now = DWT_CYCCNT;
    uint64_t value;
    if (now < cycles_last) {
        cycles_high += (uint64_t)1u << 32;
    }
    cycles_last = now;
    value = cycles_high | now;
    irq_restore(primask);
    return value;
}

/* SysTick ticks (core clock) since the last restart, widened by the wrap count. SysTick pends
 * its interrupt as it reaches 0 and reloads on the next tick: at 0 the wrap is already counted. */
static uint64_t systick_ticks(void)
{
    uint32_t primask = irq_save();
    uint32_t hi = systick_wraps;
    uint32_t lo = SYST_CVR;
    uint64_t period = (uint64_t)systick_reload + 1u;
    uint64_t value;
    if (SCB_ICSR & ICSR_PENDSTSET) { /* wrapped, handler not run yet */
        lo = SYST_CVR;
        hi++;
    }
    irq_restore(primask);
    if (lo == 0u) {
        value = hi == 0u ? 0u : (uint64_t)hi * period - 1u; /* hi == 0: just restarted */
    } else {
        value = (uint64_t)hi * period + (systick_reload - lo);
    }
    return tick_base + value;
}

void SysTick_Handler(void)
{
    systick_wraps++;
    ms_ticks++;
    if (have_dwt) {
        (void)cycles();
    }
}

void mdt_uart_irq_handler(void)
{
    /* Only wakes the core from WFI in mdt_board_read_byte; the byte is read there. */
    UART_CR1 &= ~CR1_RXNEIE;
    if (UART_ISR & ISR_ORE) {
        UART_ICR = ICR_ORECF;
    }
}

static uint32_t gcd(uint32_t a, uint32_t b)
{
    while (b != 0u) {
        uint32_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static void systick_start(void)
{
    SYST_CSR = 0u;
    SYST_RVR = systick_reload;
    SYST_CVR = 0u;
    SCB_ICSR = ICSR_PENDSTCLR;
    systick_wraps = 0u;
    SYST_CSR = SYST_CSR_ENABLE | SYST_CSR_TICKINT | SYST_CSR_CLKSOURCE;
}

static void counter_init(void)
{
    uint32_t a, b, g;
    DEMCR |= DEMCR_TRCENA;
#if MDT_STM32_CORTEX_M7
    DWT_LAR = DWT_LAR_KEY;
#endif
    DWT_CYCCNT = 0u;
    DWT_CTRL |= DWT_CTRL_CYCCNTENA;
    a = DWT_CYCCNT;
    spin(64u);
    b = DWT_CYCCNT;
    have_dwt = (uint8_t)(a != b); /* QEMU: no DWT, CYCCNT stays 0 */
    g = gcd(1000000000u, core_hz);
    ns_mul = 1000000000u / g;
    ns_div = core_hz / g;
    ns_shift = (ns_div & (ns_div - 1u)) == 0u ? (uint32_t)__builtin_ctz(ns_div) : 32u;
    /* A 1 ms tick: widens CYCCNT on silicon, is the counter itself under QEMU, and is the clock of
     * read timeouts (it keeps running while WFI sleeps, so they are accurate to a millisecond). */
    systick_reload = core_hz / 1000u - 1u;
    systick_start();
}

static void pin_af(uint32_t port, uint32_t pin)
{
    uint32_t shift2 = 2u * pin, shift4 = 4u * (pin & 7u);
    GPIO_AFR(port, pin) = (GPIO_AFR(port, pin) & ~(0xFu << shift4)) | (MDT_UART_AF << shift4);
    GPIO_OSPEEDR(port) = (GPIO_OSPEEDR(port) & ~(0x3u << shift2)) | (0x2u << shift2); /* high speed */
    GPIO_PUPDR(port) = (GPIO_PUPDR(port) & ~(0x3u << shift2)) | (0x1u << shift2);     /* pull-up */
    GPIO_MODER(port) = (GPIO_MODER(port) & ~(0x3u << shift2)) | (0x2u << shift2);     /* alternate function */
}

static void uart_init(void)
{
    uint32_t brr;
#if MDT_VDDIO2
    RCC_APB1ENR1 |= RCC_APB1ENR1_PWREN;
    (void)RCC_APB1ENR1;
    PWR_CR2 |= PWR_CR2_IOSV; /* port G (the LPUART1 pins) is powered from VddIO2, off after reset */
#endif
    GPIO_CLK_ENABLE(MDT_TX_PORT);
    GPIO_CLK_ENABLE(MDT_RX_PORT);
    GPIO_CLK_READ();
    UART_CLK_ENABLE();
    pin_af(MDT_TX_PORT, MDT_TX_PIN);
    pin_af(MDT_RX_PORT, MDT_RX_PIN);
#if UART_LP
    brr = (uint32_t)(((uint64_t)uart_kernel_hz * 256u + MDT_UART_BAUD / 2u) / MDT_UART_BAUD);
#else
    brr = (uart_kernel_hz + MDT_UART_BAUD / 2u) / MDT_UART_BAUD; /* oversampling by 16 */
#endif
    UART_CR1 = 0u;
    UART_BRR = brr;
    UART_CR3 = CR3_OVRDIS;
    UART_CR1 = CR1_UE | CR1_RE | CR1_TE; /* 8N1 */
    NVIC_ICPR(MDT_UART_IRQ / 32u) = BIT(MDT_UART_IRQ % 32u);
    NVIC_ISER(MDT_UART_IRQ / 32u) = BIT(MDT_UART_IRQ % 32u);
}

void mdt_board_init(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    uart_init();
    counter_init();
}

int mdt_board_read_byte(uint32_t timeout_ms)
{
    uint32_t start = ms_ticks;
    for (;;) {
        /* Masked check-then-sleep: a byte arriving in between still wakes WFI. */
        uint32_t primask = irq_save();
        if (UART_ISR & ISR_RXNE) {
            irq_restore(primask);
            return (int)(UART_RDR & 0xFFu);
        }
        if (UART_ISR & ISR_ORE) {
            UART_ICR = ICR_ORECF;
        }
        UART_CR1 |= CR1_RXNEIE;
        __asm__ volatile("dsb\n wfi" ::: "memory");
        UART_CR1 &= ~CR1_RXNEIE;
        irq_restore(primask);
        if (ms_ticks - start > timeout_ms) {
            return MDT_READ_TIMEOUT;
        }
    }
}

void mdt_board_write(const uint8_t *data, uint32_t length)
{
    uint32_t i;
    for (i = 0; i < length; i++) {
        while (!(UART_ISR & ISR_TXE)) {
        }
        UART_TDR = data[i];
    }
}

uint64_t mdt_board_counter(void)
{
    if (have_dwt) {
        return cycles();
    }
    /* A shift, not a 64-bit division, where it can: the counter's own cost lands in every delta. */
    if (ns_shift < 32u) {
        return (systick_ticks() * ns_mul) >> ns_shift;
    }
    return systick_ticks() * ns_mul / ns_div;
}

void mdt_board_counter_align(void)
{
    uint32_t primask;
    uint64_t now;
    if (have_dwt) {
        return; /* CYCCNT counts every cycle: deltas need no alignment */
    }
    /* Emulator only: the guest idles (WFI) between commands for a real-time-dependent while, so
     * the phase of SysTick would differ from run to run. Restarting it here puts its tick edges
     * and wraps at fixed instruction counts from this point: deltas are reproducible. */
    primask = irq_save();
    now = systick_ticks();
    /* Never behind an earlier reading, and a multiple of ns_div, so that the conversion to
     * instructions rounds the same way whatever the absolute count was. */
    tick_base = (now / ns_div + 1u) * ns_div;
    systick_start();
    irq_restore(primask);
}

uint8_t mdt_board_counter_unit(void)
{
    return have_dwt ? MDT_UNIT_CYCLES : MDT_UNIT_INSTRUCTIONS;
}

uint32_t mdt_board_clock_hz(void)
{
    return core_hz; /* MDT_CLOCK_HZ when the PLL locked, the reset clock otherwise */
}

void mdt_board_exit(int code)
{
    (void)code;
    /* No one to return to on a board (and no semihosting: without a debugger it would fault):
     * let the last byte leave, then sleep until reset. Under QEMU the host kills the emulator. */
    (void)wait_set(&UART_ISR, ISR_TC);
    SYST_CSR = 0u;
    UART_CR1 &= ~CR1_RXNEIE;
    for (;;) {
        __asm__ volatile("wfi" ::: "memory");
    }
}

/* No host files (semihosting would fault without a debugger): the shared stubs. */
#include "mdt_board_uart_only.h"
