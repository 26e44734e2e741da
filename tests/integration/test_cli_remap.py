"""``bayesmix remap``: writes the remapped runs atomically, one-line errors naming the map's
field with exit status 2, never overwrites an input."""

from __future__ import annotations

import pandas as pd
import pytest

from bayesmix.cli import main


@pytest.fixture
def files(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("run,mix.web,mix.wiki,mix.code,loss.web\na,0.5,0.2,0.3,3.0\nb,0.1,0.1,0.8,3.5\n")
    new = tmp_path / "new.csv"
    new.write_text("run,mix.webx,mix.code,mix.forum,loss.forum\nn,0.2,0.3,0.5,2.0\n")
    good = tmp_path / "map.toml"
    good.write_text('from = "v1"\nto = "v2"\nadd = ["forum"]\n[merge]\nwebx = ["web", "wiki"]\n')
    return tmp_path, old, new, good


def test_remap_writes_the_runs_in_the_new_set_with_the_new_runs(files, capsys):
    folder, old, new, good = files
    out = folder / "all.csv"
    assert main(["remap", str(old), "--map", str(good), "--with", str(new), "-o", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == [
        "run",
        "mix.webx",
        "mix.code",
        "mix.forum",
        "loss.web",
        "loss.forum",
    ]
    assert table["mix.webx"].tolist() == pytest.approx([0.7, 0.2, 0.2])
    assert table["mix.forum"].tolist() == [0.0, 0.0, 0.5]
    assert "v1 -> v2" in capsys.readouterr().out


def test_a_bad_map_exits_2_with_one_line_naming_the_field(files, capsys):
    folder, old, _, _ = files
    bad = folder / "bad.toml"
    bad.write_text('[merge]\nwebx = ["web", "nope"]\n')
    assert main(["remap", str(old), "--map", str(bad), "-o", str(folder / "o.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "field 'merge.webx'" in err and "nope" in err and len(err.splitlines()) == 1
    assert not (folder / "o.csv").exists()


def test_remap_never_overwrites_an_input(files, capsys):
    folder, old, _, good = files
    before = old.read_text()
    assert main(["remap", str(old), "--map", str(good), "-o", str(old), "--force"]) == 2
    assert old.read_text() == before
