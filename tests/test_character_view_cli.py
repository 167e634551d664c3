"""face0 character tag / list filters / sheet through the CLI (store and sheet logic: tests/test_library_view.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from face0cli.cli.app import app
from face0cli.library.store import FaceStore
from tests.test_cli import add_char, assert_clean_error, store_path

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def names(*args: object) -> list[str]:
    r = run("character", "list", *args, "--json")
    assert r.exit_code == 0, r.output
    return [c["name"] for c in json.loads(r.stdout)]


def test_tag_adds_removes_and_sets_tags() -> None:
    add_char("alice", seed=1)
    r = run("character", "tag", "alice", "Hero", "cast", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"name": "alice", "tags": ["cast", "hero"]}
    assert FaceStore(store_path()).get("alice").tags == ("cast", "hero")
    r = run("character", "tag", "alice", "cast", "--remove")
    assert r.exit_code == 0 and "alice: hero" in r.stdout
    r = run("character", "tag", "alice", "villain", "--set", "--json")
    assert json.loads(r.stdout)["tags"] == ["villain"]
    r = run("character", "tag", "alice", "--set")
    assert r.exit_code == 0 and "(no tags)" in r.stdout
    assert_clean_error(run("character", "tag", "alice"), "tag")
    assert_clean_error(run("character", "tag", "nobody", "x"), "nobody")
    assert_clean_error(run("character", "tag", "alice", "bad tag!"), "tag")
    assert_clean_error(run("character", "tag", "alice", "x", "--remove", "--set"), "--remove")


def test_list_filters_by_tag_kind_and_text() -> None:
    add_char("alice", seed=1)
    add_char("bob", seed=2)
    add_char("carol", seed=3)
    run("character", "tag", "alice", "hero")
    run("character", "tag", "bob", "hero", "villain")
    assert names() == ["alice", "bob", "carol"]
    assert names("--tag", "hero") == ["alice", "bob"]
    assert names("--tag", "villain") == ["bob"]
    assert names("--kind", "photo") == ["alice", "bob", "carol"]
    assert names("--kind", "random") == []
    assert names("--grep", "CAR") == ["carol"]
    assert names("--tag", "hero", "--grep", "bo") == ["bob"]
    r = run("character", "list")
    assert r.exit_code == 0 and "tags" in r.stdout and "villain" in r.stdout
    r = run("character", "list", "--tag", "nobody")
    assert r.exit_code == 0 and "no characters match" in r.stdout


def test_sheet_of_the_library_and_of_a_selection(tmp_path: Path) -> None:
    add_char("alice", seed=1)
    add_char("bob", seed=2)
    add_char("carol", seed=3)
    run("character", "tag", "carol", "hero")
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    FaceStore(store_path()).set_thumbnail("alice", red)
    out = tmp_path / "sheet.png"
    r = run("character", "sheet", "--out", out, "--tile", 64, "--columns", 3, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["sheet"] == str(out)
    every = Image.open(out).convert("RGB")
    assert every.width >= 3 * 64
    # alice's red thumbnail is on it: some pure-red pixels
    px = np.asarray(every)
    assert ((px[..., 0] == 255) & (px[..., 1] == 0) & (px[..., 2] == 0)).sum() > 32 * 32
    one = tmp_path / "one.png"
    assert run("character", "sheet", "bob", "alice", "--out", one, "--tile", 64).exit_code == 0
    two = Image.open(one)
    assert two.width < every.width
    hero = tmp_path / "hero.png"
    assert run("character", "sheet", "--tag", "hero", "--out", hero, "--tile", 64).exit_code == 0
    assert Image.open(hero).width < every.width
    assert_clean_error(run("character", "sheet", "--out", out), "--force")
    assert_clean_error(run("character", "sheet", "nobody", "--out", tmp_path / "x.png"), "nobody")
    assert_clean_error(run("character", "sheet", "--tag", "none", "--out", tmp_path / "x.png"), "no character")
    assert not (tmp_path / "x.png").exists()
