/* Board layer for ESP32 / ESP32-S3 boards (ESP-IDF 5.x): the protocol on UART0 (the board's
 * USB-UART bridge) at 115200 8N1 through the IDF UART driver, the core's CCOUNT cycle counter
 * widened to 64 bits, and app_main running the portable main loop. */
#include <stddef.h>
#include <stdint.h>

#include "driver/uart.h"
#include "esp_cpu.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "mdt_board.h"
#include "mdt_config.h"

#define MDT_UART UART_NUM_0
#define MDT_UART_RX_BUFFER 2048 /* must exceed the hardware FIFO (128 bytes) */
#define SAMPLER_STACK 2048
#define SAMPLER_PERIOD_MS 1000u

int main(int argc, char **argv);
void app_main(void);

static portMUX_TYPE counter_lock = portMUX_INITIALIZER_UNLOCKED;
static uint32_t cycles_last;
static uint64_t cycles_high;

/* CCOUNT is per core and wraps every 17.9 s at 240 MHz: readings must come from the core the
 * app runs on, at least once per wrap. */
static uint64_t cycles(void)
{
    uint32_t now;
    uint64_t value;
    portENTER_CRITICAL(&counter_lock);
    now = (uint32_t)esp_cpu_get_cycle_count();
    if (now < cycles_last) {
        cycles_high += (uint64_t)1u << 32;
    }
    cycles_last = now;
    value = cycles_high | now;
    portEXIT_CRITICAL(&counter_lock);
    return value;
}

/* Pinned to the app's core with a higher priority, so it also samples during a long inference. */
static void sampler(void *arg)
{
    (void)arg;
    for (;;) {
        (void)cycles();
        vTaskDelay(pdMS_TO_TICKS(SAMPLER_PERIOD_MS));
    }
}

void app_main(void)
{
    (void)main(0, NULL);
    for (;;) {
        vTaskDelay(portMAX_DELAY);
    }
}

void mdt_board_init(int argc, char **argv)
{
    uart_config_t config = {
        .baud_rate = MDT_BAUD,
        .data_bits = UART_DATA_8_BITS,
        .parity = UART_PARITY_DISABLE,
        .stop_bits = UART_STOP_BITS_1,
        .flow_ctrl = UART_HW_FLOWCTRL_DISABLE,
        .source_clk = UART_SCLK_DEFAULT,
    };
    (void)argc;
    (void)argv;
    (void)uart_driver_install(MDT_UART, MDT_UART_RX_BUFFER, 0, 0, NULL, 0);
    (void)uart_param_config(MDT_UART, &config);
    (void)cycles();
    (void)xTaskCreatePinnedToCore(sampler, "mdt_cycles", SAMPLER_STACK, NULL, uxTaskPriorityGet(NULL) + 1u,
                                  NULL, xPortGetCoreID());
}

int mdt_board_read_byte(uint32_t timeout_ms)
{
    uint8_t byte = 0u;
    if (uart_read_bytes(MDT_UART, &byte, 1u, pdMS_TO_TICKS(timeout_ms)) != 1) {
        return MDT_READ_TIMEOUT;
    }
    return (int)byte;
}

void mdt_board_write(const uint8_t *data, uint32_t length)
{
    (void)uart_write_bytes(MDT_UART, data, (size_t)length);
}

uint64_t mdt_board_counter(void)
{
    return cycles();
}

void mdt_board_counter_align(void)
{
    /* CCOUNT counts every cycle: deltas need no alignment. */
}

uint8_t mdt_board_counter_unit(void)
{
    return MDT_UNIT_CYCLES;
}

uint32_t mdt_board_clock_hz(void)
{
    return MDT_CLOCK_HZ; /* set by CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ in sdkconfig.defaults */
}

void mdt_board_exit(int code)
{
    (void)code;
    (void)uart_wait_tx_done(MDT_UART, pdMS_TO_TICKS(100u));
    for (;;) {
        vTaskDelay(portMAX_DELAY); /* silent until reset */
    }
}

/* No host files (semihosting would fault without a debugger): the shared stubs. */
#include "mdt_board_uart_only.h"
