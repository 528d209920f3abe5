"""Stage package: compiler."""
