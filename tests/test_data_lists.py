"""One reader of the ``path label`` lists: the dataset, the pre-flight check and the
preparation scripts give the same error, naming file and line, for the same bad line."""

import pytest

from video_gc.data import DataListError, read_video_list
from video_gc.data.lists import find_videos, read_list, read_list_entries
from video_gc.prep.check import check_list


@pytest.mark.parametrize("text, line, readers", [
    ("a.mp4 0\nb.mp4\n", 2, ("dataset", "prep", "check")),
    # The check tool keeps labels as written, so only the readers that number them refuse text.
    ("# a comment\n\na.mp4 x\n", 3, ("dataset", "prep")),
])
def test_every_reader_gives_the_same_error_for_a_bad_line(tmp_path, text, line, readers):
    path = tmp_path / "train.csv"
    path.write_text(text)
    readers = {name: read for name, read in {
        "dataset": lambda: read_video_list(str(path), separator=" ", prefix="", num_classes=5),
        "prep": lambda: read_list(str(path)),
        "check": lambda: check_list(str(path), verbose=False),
    }.items() if name in readers}
    messages = {}
    for name, read in readers.items():
        with pytest.raises(DataListError) as err:
            read()
        messages[name] = str(err.value)
    assert len(set(messages.values())) == 1, messages
    assert messages["dataset"].startswith(f"{path}:{line}: ")


def test_entries_resolve_against_the_prefix_or_the_list_folder(tmp_path):
    path = tmp_path / "val.csv"
    path.write_text("\ufeffdir a/clip 1.mp4 2\n/abs/v.mp4 0\n")  # a BOM, a path with the separator in it
    entries = read_list_entries(str(path))
    assert [(e.line, e.written, e.label) for e in entries] == [(1, "dir a/clip 1.mp4", 2), (2, "/abs/v.mp4", 0)]
    assert [e.path for e in entries] == [str(tmp_path / "dir a/clip 1.mp4"), "/abs/v.mp4"]
    assert read_list_entries(str(path), prefix="/data")[0].path == "/data/dir a/clip 1.mp4"
    with pytest.raises(DataListError, match="outside"):
        read_list_entries(str(path), num_classes=2)
    path.write_text("# nothing listed\n")
    with pytest.raises(DataListError, match=f"data list is empty: {path}"):
        read_list_entries(str(path))


def test_find_videos_knows_every_extension_and_skips_unfinished_files(tmp_path):
    for name in ("b.MP4", "a/c.m4v", "a/d.mpeg", "e.partial.mp4", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert find_videos(str(tmp_path)) == [str(tmp_path / "b.MP4"), str(tmp_path / "a/c.m4v"),
                                          str(tmp_path / "a/d.mpeg")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataListError, match="no video files"):
        find_videos(str(tmp_path / "empty"))


def test_check_keeps_text_labels_as_written_and_prep_may_read_an_empty_split(tmp_path, make_video):
    make_video("a.mp4")
    path = tmp_path / "raw.csv"
    path.write_text("a.mp4 abseiling\na.mp4 007\n")
    summary = check_list(str(path), verbose=False)
    assert summary["kept"] == 2
    assert (tmp_path / "raw.clean.csv").read_text() == "a.mp4 abseiling\na.mp4 007\n"
    empty = tmp_path / "test.csv"
    empty.write_text("# no test split yet\n")
    assert read_list(str(empty), allow_empty=True) == []
