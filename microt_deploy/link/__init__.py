"""Stage package: link."""
