"""Stage package: firmware."""
