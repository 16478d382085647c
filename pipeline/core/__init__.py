"""What every stage shares: params, errors, atomic files, the per-video pool, the stage runtime."""
