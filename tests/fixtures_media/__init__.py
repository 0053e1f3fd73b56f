"""Real media for encoder tests, generated into a test's tmp_path (nothing binary is committed)."""
