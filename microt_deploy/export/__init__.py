"""Stage package: export."""
