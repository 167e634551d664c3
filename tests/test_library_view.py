"""A library you can see: thumbnails and tags in the store, filters, and contact sheets."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from face0cli.errors import BadInput, InvalidName, ParameterError, UnknownCharacter
from face0cli.library.sheet import SheetTile, contact_sheet, placeholder, render_sheet, save_contact_sheet
from face0cli.library.store import THUMBNAIL_SIZE, Character, FaceStore, as_thumbnail, check_tags


def char(name: str, seed: int = 0, kind: str = "photo", **kw) -> Character:
    vec = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return Character.new(name, vec, "tiny/random", kind, {"source": f"{name}.jpg"}, **kw)


def face(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> np.ndarray:
    return np.full((size[1], size[0], 3), color, dtype=np.uint8)


@pytest.fixture
def lib(tmp_path: Path) -> FaceStore:
    return FaceStore(tmp_path / "lib" / "characters.h5")


# ------------------------------------------------------------------------------------------------ thumbnails


def test_thumbnail_round_trip_readable_with_plain_h5py(lib: FaceStore) -> None:
    lib.add(char("alice"), thumbnail=face((200, 10, 10)))
    lib.add(char("bob", 1))
    assert lib.get("alice").has_thumbnail and not lib.get("bob").has_thumbnail
    assert np.array_equal(lib.thumbnail("alice"), face((200, 10, 10)))
    assert lib.thumbnail("bob") is None
    with h5py.File(lib.path, "r") as f:
        assert int(f.attrs["format_version"]) == 1  # an optional addition: older readers ignore it
        ds = f["characters"]["alice"]
        thumb = f[ds.attrs["thumbnail"]][()]
        assert thumb.dtype == np.uint8 and thumb.shape == (30, 40, 3)
        assert "thumbnail" not in f["characters"]["bob"].attrs
        assert list(f["characters"]) == ["alice", "bob"]  # thumbnails live outside /characters


def test_thumbnails_are_shrunk_and_converted() -> None:
    big = Image.new("RGB", (1000, 500), (1, 2, 3))
    assert as_thumbnail(big).shape == (THUMBNAIL_SIZE // 2, THUMBNAIL_SIZE, 3)
    assert as_thumbnail(np.ones((4, 4, 3), np.float32))[0, 0].tolist() == [255, 255, 255]  # [0, 1] floats
    assert as_thumbnail(np.zeros((4, 4), np.uint8)).shape == (4, 4, 3)
    assert as_thumbnail(np.zeros((4, 4, 4), np.uint8)).shape == (4, 4, 3)
    with pytest.raises(BadInput):
        as_thumbnail(np.zeros((4, 4, 2)))


def test_set_thumbnail_replace_and_drop_leave_no_orphans(lib: FaceStore) -> None:
    lib.add(char("alice"))
    lib.set_thumbnail("alice", Image.new("RGB", (16, 16), (0, 255, 0)))
    lib.set_thumbnail("alice", face((0, 0, 255)))
    with h5py.File(lib.path, "r") as f:
        assert len(f["thumbnails"]) == 1
    assert lib.thumbnail("alice")[0, 0].tolist() == [0, 0, 255]
    lib.set_thumbnail("alice", None)
    assert lib.thumbnail("alice") is None
    with h5py.File(lib.path, "r") as f:
        assert "thumbnails" not in f
    with pytest.raises(UnknownCharacter):
        lib.set_thumbnail("nobody", face((0, 0, 0)))


def test_rename_keeps_remove_and_force_replace_drop_the_thumbnail(lib: FaceStore) -> None:
    lib.add(char("alice"), thumbnail=face((9, 9, 9)))
    lib.rename("alice", "carol")
    assert lib.thumbnail("carol")[0, 0].tolist() == [9, 9, 9]
    lib.add(char("carol", 5), force=True)  # a new character under the name: not the old picture
    assert lib.thumbnail("carol") is None
    lib.add(char("dave"), thumbnail=face((1, 1, 1)))
    lib.remove("dave")
    with h5py.File(lib.path, "r") as f:
        assert "thumbnails" not in f


def test_an_older_face0_writing_the_file_never_shows_a_wrong_thumbnail(lib: FaceStore) -> None:
    lib.add(char("alice"), thumbnail=face((9, 9, 9)))
    with h5py.File(lib.path, "r+") as f:  # what face0 0.1 does for `remove alice` + `embed alice`
        del f["characters"]["alice"]
        ds = f["characters"].create_dataset("alice", data=np.ones(8, np.float32))
        for k, v in {
            "embedder_id": "e",
            "dim": 8,
            "kind": "photo",
            "provenance": "{}",
            "created": "",
            "note": "",
        }.items():
            ds.attrs[k] = v
    assert lib.thumbnail("alice") is None and not lib.get("alice").has_thumbnail
    lib.add(char("bob"))  # the next write of this face0 collects the orphan
    with h5py.File(lib.path, "r") as f:
        assert "thumbnails" not in f


def test_old_files_without_thumbnails_or_tags_still_read(tmp_path: Path) -> None:
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:  # the version-1 layout of docs/store-format.md, nothing more
        f.attrs["format"] = "face0-characters"
        f.attrs["format_version"] = 1
        ds = f.create_group("characters").create_dataset("old", data=np.ones(4, np.float32))
        for k, v in {
            "embedder_id": "e",
            "dim": 4,
            "kind": "mix",
            "provenance": "{}",
            "created": "",
            "note": "",
        }.items():
            ds.attrs[k] = v
    lib = FaceStore(path)
    c = lib.get("old")
    assert (c.tags, c.has_thumbnail) == ((), False)
    assert lib.thumbnails() == {"old": None}
    assert "tags" not in c.to_json() and "thumbnail" not in c.to_json()
    lib.add_tags("old", ["legacy"])
    assert lib.get("old").tags == ("legacy",)


def test_export_and_import_carry_thumbnails_and_tags(lib: FaceStore, tmp_path: Path) -> None:
    lib.add(char("alice", tags=["hero"]), thumbnail=face((5, 6, 7)))
    lib.add(char("bob", 1))
    out = tmp_path / "export.h5"
    lib.export(None, out)
    other = FaceStore(tmp_path / "other.h5")
    other.import_from(out)
    assert other.get("alice").tags == ("hero",)
    assert np.array_equal(other.thumbnail("alice"), face((5, 6, 7)))
    assert other.thumbnail("bob") is None


def test_add_many_thumbnails_must_belong_to_the_characters(lib: FaceStore) -> None:
    with pytest.raises(BadInput, match="zed"):
        lib.add_many([char("alice")], thumbnails={"zed": face((0, 0, 0))})
    assert not lib.path.exists()


# ------------------------------------------------------------------------------------------------------ tags


def test_tags_set_add_remove_and_rules(lib: FaceStore) -> None:
    lib.add(char("alice"))
    assert lib.set_tags("alice", ["Hero", "villain", "hero"]) == ("hero", "villain")
    assert lib.add_tags("alice", ["side-kick"]) == ("hero", "side-kick", "villain")
    assert lib.remove_tags("alice", ["villain", "absent"]) == ("hero", "side-kick")
    assert lib.get("alice").tags == ("hero", "side-kick")
    assert lib.get("alice").to_json()["tags"] == ["hero", "side-kick"]
    with h5py.File(lib.path, "r") as f:
        assert json.loads(f["characters"]["alice"].attrs["tags"]) == ["hero", "side-kick"]
    assert lib.set_tags("alice", []) == ()
    with pytest.raises(InvalidName, match="tag"):
        lib.add_tags("alice", ["two words"])
    with pytest.raises(UnknownCharacter):
        lib.add_tags("nobody", ["x"])
    assert check_tags(["B", "a"]) == ("a", "b")


def test_find_by_tag_kind_and_text(lib: FaceStore) -> None:
    lib.add_many(
        [
            char("alice", 0, "photo", tags=["hero"], note="from the beach"),
            char("bob", 1, "random", tags=["hero", "villain"]),
            char("carol", 2, "mix"),
        ]
    )
    names = lambda cs: [c.name for c in cs]  # noqa: E731
    assert names(lib.find()) == ["alice", "bob", "carol"]
    assert names(lib.find(tag="HERO")) == ["alice", "bob"]
    assert names(lib.find(tag="hero", kind="random")) == ["bob"]
    assert names(lib.find(grep="BEACH")) == ["alice"]
    assert names(lib.find(grep="carol.jpg")) == ["carol"]  # provenance is searched too
    assert names(lib.find(grep="villain")) == ["bob"]
    assert lib.find(tag="nobody") == []
    assert lib.tags() == {"hero": 2, "villain": 1}
    with pytest.raises(BadInput, match="kind"):
        lib.find(kind="alien")


# ---------------------------------------------------------------------------------------------------- sheets


def test_contact_sheet_shows_thumbnails_and_placeholders(lib: FaceStore, tmp_path: Path) -> None:
    lib.add(char("alice", tags=["hero"]), thumbnail=face((250, 0, 0), (64, 64)))
    lib.add(char("bob", 1, "random"))
    lib.add(char("carol", 2, "mix"), thumbnail=face((0, 0, 250), (64, 64)))
    sheet = contact_sheet(lib, tile=64, columns=2)
    arr = np.asarray(sheet)
    assert sheet.width == 4 + 2 * (64 + 4)
    red = (arr[..., 0] > 240) & (arr[..., 1] < 10) & (arr[..., 2] < 10)
    blue = (arr[..., 2] > 240) & (arr[..., 0] < 10) & (arr[..., 1] < 10)
    assert red.sum() >= 64 * 60 and blue.sum() >= 64 * 60
    y, x = np.argwhere(red)[0]
    assert x < sheet.width // 2  # alice first, top left
    grey = np.all(arr == (214, 214, 218), axis=-1)
    assert grey.sum() > 500  # bob's placeholder
    path = save_contact_sheet(sheet, tmp_path / "out" / "sheet.png")
    assert Image.open(path).size == sheet.size


def test_contact_sheet_selection(lib: FaceStore) -> None:
    lib.add_many([char("alice", tags=["hero"]), char("bob", 1)])
    one = contact_sheet(lib, tag="hero", tile=64)
    both = contact_sheet(lib, ["bob", "alice"], tile=64)
    assert one.width < both.width
    with pytest.raises(UnknownCharacter):
        contact_sheet(lib, ["zed"])
    with pytest.raises(ParameterError, match="no character"):
        contact_sheet(lib, grep="nothing-like-this")


def test_render_sheet_checks_and_placeholder() -> None:
    assert placeholder(48).size == (48, 48)
    im = render_sheet([SheetTile("a-very-long-character-name-that-will-not-fit", "photo · hero")], tile=48)
    assert im.size[0] == 4 + 48 + 4
    with pytest.raises(ParameterError):
        render_sheet([])
    with pytest.raises(ParameterError):
        render_sheet([SheetTile("a")], tile=8)
    with pytest.raises(ParameterError):
        render_sheet([SheetTile("a")], columns=0)


def test_save_contact_sheet_refuses_a_folder(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="folder"):
        save_contact_sheet(placeholder(32), tmp_path)
