/* Board layer for STM32 boards (STM32Cube HAL): the protocol on the ST-LINK virtual COM port at
 * 115200 8N1, the DWT cycle counter widened to 64 bits, the system clock from the PLL values in
 * mdt_board_stm32.h (rendered from the board's data file). Everything board-specific (UART
 * instance, pins, clock tree) is in that header; this file only knows the three series. */
#include <stdint.h>

#include "mdt_board.h"
#include "mdt_board_stm32.h"
#include "mdt_config.h"

#define UART_CHUNK 0xFFFFu /* the HAL's transfer length is 16 bits */

static UART_HandleTypeDef uart;
static volatile uint32_t cycles_last;
static volatile uint64_t cycles_high;

void SysTick_Handler(void);

/* Widening the 32-bit CYCCNT needs a reading at least once per wrap (15 s at 280 MHz): every
 * counter read does it, and so does the 1 kHz SysTick, so a long stage cannot lose a wrap. */
static uint64_t cycles(void)
{
    uint32_t primask = __get_PRIMASK();
    uint32_t now;
    uint64_t value;
    __disable_irq();
    now = DWT->CYCCNT;
    if (now < cycles_last) {
        cycles_high += (uint64_t)1u << 32;
    }
    cycles_last = now;
    value = cycles_high | now;
    __set_PRIMASK(primask);
    return value;
}

void SysTick_Handler(void)
{
    HAL_IncTick();
    (void)cycles();
}

/* A PLL that does not lock leaves the core on its reset clock: the board still answers (the UART
 * divisor follows the real clock) and HELLO reports the clock it really runs at. */
static void clock_init(void)
{
    RCC_OscInitTypeDef osc = {0};
    RCC_ClkInitTypeDef clk = {0};

#if defined(MDT_STM32_L4)
    __HAL_RCC_PWR_CLK_ENABLE();
    if (HAL_PWREx_ControlVoltageScaling(PWR_REGULATOR_VOLTAGE_SCALE1_BOOST) != HAL_OK) {
        return;
    }
    osc.OscillatorType = RCC_OSCILLATORTYPE_MSI;
    osc.MSIState = RCC_MSI_ON;
    osc.MSICalibrationValue = RCC_MSICALIBRATION_DEFAULT;
    osc.MSIClockRange = RCC_MSIRANGE_6; /* 4 MHz */
    osc.PLL.PLLSource = RCC_PLLSOURCE_MSI;
    osc.PLL.PLLR = MDT_PLL_R;
    clk.ClockType = RCC_CLOCKTYPE_HCLK | RCC_CLOCKTYPE_SYSCLK | RCC_CLOCKTYPE_PCLK1 | RCC_CLOCKTYPE_PCLK2;
    clk.AHBCLKDivider = RCC_SYSCLK_DIV1;
    clk.APB1CLKDivider = RCC_HCLK_DIV1;
    clk.APB2CLKDivider = RCC_HCLK_DIV1;
#elif defined(MDT_STM32_F7)
    __HAL_RCC_PWR_CLK_ENABLE();
    __HAL_PWR_VOLTAGESCALING_CONFIG(PWR_REGULATOR_VOLTAGE_SCALE1);
    osc.OscillatorType = RCC_OSCILLATORTYPE_HSE;
    osc.PLL.PLLSource = RCC_PLLSOURCE_HSE;
    clk.ClockType = RCC_CLOCKTYPE_HCLK | RCC_CLOCKTYPE_SYSCLK | RCC_CLOCKTYPE_PCLK1 | RCC_CLOCKTYPE_PCLK2;
    clk.AHBCLKDivider = RCC_SYSCLK_DIV1;
    clk.APB1CLKDivider = RCC_HCLK_DIV4;
    clk.APB2CLKDivider = RCC_HCLK_DIV2;
#elif defined(MDT_STM32_H7)
    if (HAL_PWREx_ConfigSupply(MDT_STM32_SUPPLY) != HAL_OK) {
        return;
    }
    __HAL_PWR_VOLTAGESCALING_CONFIG(PWR_REGULATOR_VOLTAGE_SCALE0);
    while (!__HAL_PWR_GET_FLAG(PWR_FLAG_VOSRDY)) {
    }
    osc.OscillatorType = RCC_OSCILLATORTYPE_HSE;
    osc.PLL.PLLSource = RCC_PLLSOURCE_HSE;
    osc.PLL.PLLR = MDT_PLL_R;
    osc.PLL.PLLFRACN = 0;
    osc.PLL.PLLVCOSEL = RCC_PLL1VCOWIDE;
    osc.PLL.PLLRGE = RCC_PLL1VCIRANGE_1; /* 2..4 MHz into the PLL */
    clk.ClockType = RCC_CLOCKTYPE_SYSCLK | RCC_CLOCKTYPE_HCLK | RCC_CLOCKTYPE_D1PCLK1 | RCC_CLOCKTYPE_PCLK1
                    | RCC_CLOCKTYPE_PCLK2 | RCC_CLOCKTYPE_D3PCLK1;
    clk.SYSCLKDivider = RCC_SYSCLK_DIV1;
    clk.AHBCLKDivider = RCC_HCLK_DIV1;
    clk.APB3CLKDivider = RCC_APB3_DIV2;
    clk.APB1CLKDivider = RCC_APB1_DIV2;
    clk.APB2CLKDivider = RCC_APB2_DIV2;
    clk.APB4CLKDivider = RCC_APB4_DIV2;
#else
#error "mdt_board_stm32.h names no supported series (L4, F7, H7)"
#endif
#if defined(MDT_STM32_OSC_HSE)
    osc.HSEState = RCC_HSE_ON;
#elif defined(MDT_STM32_OSC_HSE_BYPASS)
    osc.HSEState = RCC_HSE_BYPASS; /* the ST-LINK's 8 MHz MCO output */
#endif
    osc.PLL.PLLState = RCC_PLL_ON;
    osc.PLL.PLLM = MDT_PLL_M;
    osc.PLL.PLLN = MDT_PLL_N;
    osc.PLL.PLLP = MDT_PLL_P;
    osc.PLL.PLLQ = MDT_PLL_Q;
    if (HAL_RCC_OscConfig(&osc) != HAL_OK) {
        return;
    }
#if defined(MDT_STM32_F7)
    if (HAL_PWREx_EnableOverDrive() != HAL_OK) {
        return;
    }
#endif
    clk.SYSCLKSource = RCC_SYSCLKSOURCE_PLLCLK;
    (void)HAL_RCC_ClockConfig(&clk, MDT_FLASH_LATENCY);
}

static void uart_init(void)
{
    GPIO_InitTypeDef pin = {0};

#if MDT_STM32_VDDIO2
    __HAL_RCC_PWR_CLK_ENABLE();
    HAL_PWREx_EnableVddIO2();
#endif
    MDT_TX_PORT_CLK_ENABLE();
    MDT_RX_PORT_CLK_ENABLE();
    MDT_UART_CLK_ENABLE();
    pin.Mode = GPIO_MODE_AF_PP;
    pin.Pull = GPIO_PULLUP;
    pin.Speed = GPIO_SPEED_FREQ_HIGH;
    pin.Alternate = MDT_UART_AF;
    pin.Pin = MDT_TX_PIN;
    HAL_GPIO_Init(MDT_TX_PORT, &pin);
    pin.Pin = MDT_RX_PIN;
    HAL_GPIO_Init(MDT_RX_PORT, &pin);

    uart.Instance = MDT_UART_INSTANCE;
    uart.Init.BaudRate = 115200u;
    uart.Init.WordLength = UART_WORDLENGTH_8B;
    uart.Init.StopBits = UART_STOPBITS_1;
    uart.Init.Parity = UART_PARITY_NONE;
    uart.Init.Mode = UART_MODE_TX_RX;
    uart.Init.HwFlowCtl = UART_HWCONTROL_NONE;
    uart.Init.OverSampling = UART_OVERSAMPLING_16;
    /* With overrun detection on, one byte lost while the core was busy would block reception
     * until the error is cleared; off, the byte is simply lost and the frame's CRC catches it. */
    uart.AdvancedInit.AdvFeatureInit = UART_ADVFEATURE_RXOVERRUNDISABLE_INIT;
    uart.AdvancedInit.OverrunDisable = UART_ADVFEATURE_OVERRUN_DISABLE;
    (void)HAL_UART_Init(&uart);
}

void mdt_board_init(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    (void)HAL_Init();
    clock_init();
#if defined(MDT_STM32_F7) || defined(MDT_STM32_H7)
    SCB_EnableICache();
    SCB_EnableDCache();
#endif
    uart_init();
    CoreDebug->DEMCR |= CoreDebug_DEMCR_TRCENA_Msk;
#if defined(MDT_STM32_F7)
    DWT->LAR = 0xC5ACCE55u; /* the Cortex-M7 of the F7 locks the DWT registers after reset */
#endif
    DWT->CYCCNT = 0u;
    DWT->CTRL |= DWT_CTRL_CYCCNTENA_Msk;
}

int mdt_board_read_byte(uint32_t timeout_ms)
{
    uint8_t byte = 0u;
    if (HAL_UART_Receive(&uart, &byte, 1u, timeout_ms) != HAL_OK) {
        return MDT_READ_TIMEOUT;
    }
    return (int)byte;
}

void mdt_board_write(const uint8_t *data, uint32_t length)
{
    while (length > 0u) {
        uint16_t chunk = (uint16_t)(length > UART_CHUNK ? UART_CHUNK : length);
        /* Older HALs take a non-const pointer; the data is only read. */
        (void)HAL_UART_Transmit(&uart, (uint8_t *)(uintptr_t)data, chunk, HAL_MAX_DELAY);
        data += chunk;
        length -= chunk;
    }
}

uint64_t mdt_board_counter(void)
{
    return cycles();
}

void mdt_board_counter_align(void)
{
    /* CYCCNT counts every cycle: deltas need no alignment. */
}

uint8_t mdt_board_counter_unit(void)
{
    return MDT_UNIT_CYCLES;
}

uint32_t mdt_board_clock_hz(void)
{
    return SystemCoreClock; /* what the clock tree really gave, MDT_CLOCK_HZ when the PLL locked */
}

void mdt_board_exit(int code)
{
    (void)code;
    /* No one to return to on a board: let the last frame leave, then stay silent until reset. */
    while (__HAL_UART_GET_FLAG(&uart, UART_FLAG_TC) == RESET) {
    }
    for (;;) {
        __WFI();
    }
}
