"""Every test run keeps PlatformIO off the network: any pio call a code path makes runs in a
network namespace with a registry-free core (the offline build of the STM32 projects)."""

import os

os.environ["MICROT_PIO_OFFLINE"] = "1"
