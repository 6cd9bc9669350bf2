"""A collective job's shares (npo.models.share.Share): equal lengths on every process (padded with stand-ins),
the results back in the list's order, stand-ins dropped."""

from npo.models.share import Share


def test_every_process_takes_the_same_number_of_rows():
    shares = [Share(r, 3).indices(7) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4, -1], [2, 5, -1]]
    assert [Share(r, 4).indices(2) for r in range(4)] == [[0], [1], [-1], [-1]]  # fewer rows than processes
    assert Share(1, 3).indices(7, pad=False) == [1, 4]  # work without collectives needs no stand-ins
    assert Share(0, 2).indices(0) == []


def test_one_process_runs_the_whole_list_in_order():
    seen = []
    assert Share().run(["a", "b", "c"], lambda part: seen.append(list(part)) or [x.upper() for x in part]) == \
        ["A", "B", "C"]
    assert seen == [["a", "b", "c"]]
