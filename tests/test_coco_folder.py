"""A user's COCO folder: loading, letterboxing, and every refusal naming its file."""

import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from dia_ode.data import DataError, load_dataset
from dia_ode.data.coco_folder import load_coco_folder


def _write_folder(root: Path, n_train: int = 6, n_val: int = 3, size=(40, 60)) -> dict:
    """A COCO 2017-style folder of random images with one 10x20 box each at (5, 8)."""
    layout = {}
    for name, n in (("train2017", n_train), ("val2017", n_val)):
        (root / name).mkdir(parents=True)
        images, annotations = [], []
        for i in range(n):
            pixels = (torch.rand(size[0], size[1], 3) * 255).byte().numpy()
            Image.fromarray(pixels).save(root / name / f"{i}.png")
            images.append({"id": 100 + i, "file_name": f"{i}.png", "width": size[1], "height": size[0]})
            annotations.append({"id": i + 1, "image_id": 100 + i, "category_id": 7 if i % 2 else 3,
                                "bbox": [5, 8, 10, 20], "area": 200, "iscrowd": 0})
        layout[name] = {"images": images, "annotations": annotations,
                        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}
    (root / "annotations").mkdir()
    for name, coco in layout.items():
        _save(root, name, coco)
    return layout


def _save(root, name, coco):
    (root / "annotations" / f"instances_{name}.json").write_text(json.dumps(coco))


def test_a_coco_folder_loads_letterboxed_with_its_boxes_moved(tmp_path):
    _write_folder(tmp_path)
    data = load_coco_folder(tmp_path, val_fraction=0.34, image_size=30)
    assert (len(data.train), len(data.val), len(data.test)) == (4, 2, 3)
    assert data.categories == ("cat", "dog") and data.num_classes == 2
    assert data.train.images.shape[1:] == (3, 30, 30)
    # 40 x 60 scaled by 0.5 to 20 x 30, centred: 5 pixels of black above and below
    torch.testing.assert_close(data.test.boxes[0], torch.tensor([[2.5, 9.0, 7.5, 19.0]]))
    assert data.test.labels[0].tolist() == [0] and data.test.labels[1].tolist() == [1]  # ids 3, 7 -> labels 0, 1
    assert data.test.ids.tolist() == [100, 101, 102]
    same = load_dataset("coco", tmp_path)  # through the registry, its defaults
    assert same.image_size == 128 and len(same.test) == 3


@pytest.mark.parametrize("break_it, needle", [
    (lambda root, coco: (root / "annotations" / "instances_train2017.json").write_text("{not json"),
     "instances_train2017.json is not a readable JSON file"),
    (lambda root, coco: _save(root, "train2017", {"images": []}), "is not COCO instances JSON"),
    (lambda root, coco: _save(root, "train2017", {**coco, "annotations": [{**coco["annotations"][0],
                                                                          "category_id": 99}]}),
     "category_id 99, which the file does not declare"),
    (lambda root, coco: _save(root, "train2017", {**coco, "annotations": [{**coco["annotations"][0],
                                                                          "bbox": [55, 8, 10, 20]}]}),
     "outside its image 0.png (60x40)"),
    (lambda root, coco: _save(root, "train2017", {**coco, "images": [{**coco["images"][0],
                                                                     "file_name": "../secret.png"},
                                                                    *coco["images"][1:]]}),
     "'../secret.png' leaves the dataset folder"),
    (lambda root, coco: _save(root, "train2017", {**coco, "images": [{**coco["images"][0],
                                                                     "file_name": str(root / "x.png")},
                                                                    *coco["images"][1:]]}),
     "leaves the dataset folder"),
])
def test_bad_coco_input_is_one_line_naming_the_file(tmp_path, break_it, needle, monkeypatch):
    layout = _write_folder(tmp_path)
    break_it(tmp_path, layout["train2017"])
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    with pytest.raises(DataError, match=needle.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")) as err:
        load_coco_folder(tmp_path)
    assert "\n" not in str(err.value)
    assert not any("secret" in p or p.endswith("x.png") for p in opened)  # a refused path is never opened


def test_an_empty_folder_and_a_missing_data_dir_are_refused(tmp_path):
    with pytest.raises(DataError, match="holds no annotations/instances_<name>.json"):
        load_coco_folder(tmp_path)
    with pytest.raises(DataError, match="needs --data-dir"):
        load_dataset("coco")


def test_unreadable_images_are_skipped_with_a_count_and_their_names(tmp_path, caplog, monkeypatch):
    _write_folder(tmp_path)
    (tmp_path / "train2017" / "1.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING):
        data = load_coco_folder(tmp_path, val_fraction=0.0)
    assert len(data.train) == 5
    assert "skipped 1 image(s)" in caplog.text and "1.png" in caplog.text
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # every image is now a decompression bomb
    with pytest.raises(DataError, match="no readable image"):
        load_coco_folder(tmp_path)
    assert "DecompressionBombError" in caplog.text


def test_train_a_detector_on_a_coco_folder_through_the_cli(tmp_path):
    from click.testing import CliRunner

    from dia_ode.cli import main

    _write_folder(tmp_path / "data", n_train=4, n_val=2)

    def train(*args):
        return CliRunner().invoke(main, ["train", "--task", "detection", "--dataset", "coco", "--no-progress",
                                         "--out", str(tmp_path / "runs"), *map(str, args)])

    done = train("--data-dir", tmp_path / "data", "--model", "resnet20", "--model-option", "base_width=4",
                 "--epochs", 1, "--batch-size", 2)
    assert done.exit_code == 0, done.output
    summary = json.loads((next((tmp_path / "runs").iterdir()) / "summary.json").read_text())
    assert summary["dataset"] == "coco" and "test_ap50" in summary
    missing = train()
    assert missing.exit_code == 2 and "needs --data-dir" in missing.output
