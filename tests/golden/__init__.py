"""Golden histories: histories recorded from real runs, replayed by every interpreter change."""
