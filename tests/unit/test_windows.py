from personalize.ingest import windows

T0 = 1_790_000_000_000 - 1_790_000_000_000 % 60_000  # the start of a minute


def test_window_covers_current_minute_and_the_ones_before():
    tiles = {}
    for minutes_ago in (0, 5, 9, 10, 30, 59):
        windows.add(tiles, T0 - minutes_ago * 60_000, measure=0)
    sums = windows.window_sums(tiles, T0 + 30_000)
    assert sums["1m"][0] == 1
    assert sums["10m"][0] == 3  # minutes 0, 5, 9 ago; 10 ago is outside
    assert sums["1h"][0] == 6


def test_future_tiles_wait_for_their_minute():
    tiles = {}
    windows.add(tiles, T0 + 60_000, measure=1)
    assert windows.window_sums(tiles, T0)["1h"][1] == 0
    assert windows.window_sums(tiles, T0 + 60_000)["1m"][1] == 1


def test_prune_drops_only_what_no_window_can_count():
    tiles = {}
    windows.add(tiles, T0 - 59 * 60_000, 0)
    windows.add(tiles, T0 - 60 * 60_000, 0)
    windows.prune(tiles, T0)
    assert list(tiles) == [windows.minute_of(T0) - 59]


def test_late_means_older_than_the_longest_window():
    assert not windows.is_late(T0 - 59 * 60_000, T0)
    assert windows.is_late(T0 - 60 * 60_000, T0)


def test_decay_halves_each_half_life():
    assert windows.decay(8.0, 0, 3, half_life_ms=1) == 1.0
    assert windows.decay(8.0, 5, 3, half_life_ms=1) == 8.0
