"""The `nsjax` command line, run in-process through `main(argv)`."""

import argparse
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from nsjax.cli import COMMANDS, main
from nsjax.data._shards import ShardSource


def _jpeg(seed: int, height: int, width: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def _folder(root, names: dict[str, int]) -> str:
    for c, (name, count) in enumerate(names.items()):
        os.makedirs(os.path.join(root, name))
        for i in range(count):
            with open(os.path.join(root, name, f"{i}.jpg"), "wb") as f:
                f.write(_jpeg(10 * c + i, 40, 30))
    return str(root)


def test_convert_npz(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", images=np.zeros((5, 8, 8, 3), np.uint8), labels=np.arange(5))
    dst = str(tmp_path / "shards")
    assert main(["convert", str(tmp_path / "d.npz"), dst, "--records-per-shard", "2"]) == 0
    out = capsys.readouterr().out
    assert "Wrote 5 of 5 records in 3 shards" in out and "Skipped none. Stored 5 raw." in out
    with open(os.path.join(dst, "manifest.json")) as f:
        assert json.load(f)["options"]["records_per_shard"] == 2
    assert main(["convert", str(tmp_path / "d.npz"), dst, "--records-per-shard", "2"]) == 0
    assert "already holds this conversion (5 records); nothing written" in capsys.readouterr().out


def test_convert_folder_with_classes_short_side_and_a_bad_file(tmp_path, capsys):
    src = _folder(tmp_path / "src", {"cat": 2, "dog": 1})
    with open(os.path.join(src, "dog", "broken.jpg"), "wb") as f:
        f.write(b"GIF89a")
    with open(tmp_path / "classes.json", "w") as f:
        json.dump(["dog", "cat", "emu"], f)
    dst = str(tmp_path / "shards")
    assert main(["convert", src, dst, "--short-side", "20", "--quality", "80",
                 "--classes", str(tmp_path / "classes.json")]) == 0
    out = capsys.readouterr().out
    assert "Wrote 3 of 4 records in 1 shards" in out and "Stored 3 jpeg." in out
    assert "Skipped 1: dog/broken.jpg (" in out
    shards = ShardSource(dst)
    assert shards.classes == ("dog", "cat", "emu")
    assert [(r["id"], r["label"]) for r in map(shards.__getitem__, range(3))] == [
        ("cat/0.jpg", 1), ("cat/1.jpg", 1), ("dog/0.jpg", 0)]
    assert shards.manifest["options"] == dict(records_per_shard=1024, short_side=20, quality=80)


def test_convert_unlabeled_folder(tmp_path, capsys):
    src = _folder(tmp_path / "src", {"a": 1, "b": 1})
    assert main(["convert", src, str(tmp_path / "shards"), "--unlabeled"]) == 0
    shards = ShardSource(tmp_path / "shards")
    assert not shards.labeled and [shards[i]["label"] for i in range(2)] == [-1, -1]


@pytest.mark.parametrize("case", ["npz without labels", "missing", "empty folder",
                                  "classes not a list"])
def test_bad_input_returns_1_naming_the_file(tmp_path, capsys, case):
    src, extra = str(tmp_path / "d.npz"), []
    if case == "npz without labels":
        np.savez(src, images=np.zeros((2, 4, 4, 3), np.uint8))
    elif case == "empty folder":
        src = str(tmp_path / "images")
        os.makedirs(src)
    elif case == "classes not a list":
        src = _folder(tmp_path / "src", {"a": 1})
        extra = ["--classes", str(tmp_path / "classes.json")]
        with open(tmp_path / "classes.json", "w") as f:
            json.dump({"a": 0}, f)
    assert main(["convert", src, str(tmp_path / "shards"), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nsjax convert: error: ") and "Traceback" not in err
    assert (extra[1] if extra else src) in err
    assert not os.path.exists(tmp_path / "shards" / "manifest.json")


@pytest.mark.parametrize("flags, message", [
    (["--quality", "0"], "argument --quality: must be an integer in [1, 100], got '0'"),
    (["--short-side", "x"], "argument --short-side: must be an integer >= 1, got 'x'"),
    (["--workers", "-1"], "argument --workers: must be an integer >= 0, got '-1'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--unlabeled", "--classes", "c.json"], "--classes is for labeled image folders"),
])  # fmt: skip
def test_bad_flags_exit_2(tmp_path, capsys, flags, message):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.zeros(2, int))
    with pytest.raises(SystemExit) as exit:
        main(["convert", str(tmp_path / "d.npz"), str(tmp_path / "shards"), *flags])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "shards")


def test_commands_are_a_registry():
    assert [c.name for c in COMMANDS] == ["demo", "iterate", "train", "finetune", "evaluate",
                                          "convert", "label", "balance"]
    with pytest.raises(SystemExit) as exit:
        main([])
    assert exit.value.code == 2


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_every_command_explains_its_flags(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    parser = next(c for c in COMMANDS if c.name == command)
    sub = argparse.ArgumentParser()
    parser.add_arguments(sub)
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.option_strings[-1] in text and action.help, action.dest
            if action.default is not None and action.default is not False:
                assert "default" in action.help, action.dest


def test_label_then_balance(tmp_path, capsys):
    from nsjax.pseudo import load_balance, read_labels
    from nsjax.train import export_teacher
    from tests.pseudo._teacher import tiny_teacher

    teacher = tiny_teacher()
    export_teacher(tmp_path / "teacher.eqx", teacher.model, teacher.state)
    np.savez(tmp_path / "u.npz", images=np.random.default_rng(0).integers(
        0, 256, (12, 36, 36, 3), dtype=np.uint8))
    store = str(tmp_path / "store")
    assert main(["label", str(tmp_path / "teacher.eqx"), str(tmp_path / "u.npz"), store,
                 "--top-k", "3", "--batch-size", "4", "--records-per-shard", "5"]) == 0
    assert "Labelled 3 of 3 shards" in capsys.readouterr().out
    assert len(read_labels(store)) == 12
    # a random teacher is unconfident: the paper's threshold keeps nothing, and says why
    assert main(["balance", store, str(tmp_path / "b"), "--per-class", "4"]) == 1
    assert "min_confidence 0.3) per class" in capsys.readouterr().err
    assert main(["balance", store, str(tmp_path / "b"), "--per-class", "4",
                 "--min-confidence", "0"]) == 0
    assert len(load_balance(tmp_path / "b")) % 4 == 0


def test_a_test_folder_takes_the_labeled_folders_class_order(tmp_path):
    # a test folder holding some classes keeps the labeled indices; an unknown class is refused
    from nsjax.cli._common import open_source, open_test

    labeled = open_source(_folder(tmp_path / "l", {"ant": 1, "bee": 1, "cat": 1}), labeled=True)
    test = open_test(_folder(tmp_path / "t", {"bee": 1, "cat": 2}), labeled)
    assert sorted(test[i]["label"] for i in range(len(test))) == [1, 2, 2]
    with pytest.raises(ValueError, match="dog"):
        open_test(_folder(tmp_path / "u", {"dog": 1}), labeled)


def test_set_overrides_every_generation_then_one():
    # whatever the order on the line: FIELD for all generations, then genN.FIELD for one
    from nsjax.cli._configs import iterate_config, parse_sets, to_fields
    from nsjax.loop import IterateConfig

    base = to_fields(IterateConfig(generations=({"epochs": 5.0}, {"epochs": 6.0})))
    config = iterate_config(base, parse_sets(["gen0.epochs=10", "epochs=30", "top_k=4",
                                              "randaugment_magnitude=null"]))
    assert [config.generation_config(g).epochs for g in (0, 1)] == [10.0, 30.0]
    assert config.top_k == 4 and config.student.randaugment_magnitude is None
