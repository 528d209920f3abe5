"""Stage package: targets."""
