"""Detection building blocks: box ops and NMS, the generated digit scenes, COCO export and
COCOeval through pycocotools."""

import math

import pytest
import torch

from dia_ode.data.coco import to_coco
from dia_ode.data.scenes import VISIBLE, compose_scenes, digit_scenes
from dia_ode.models.boxes import (batched_nms, box_area, box_iou, clip_boxes, flip_boxes, nms, xywh_to_xyxy,
                                  xyxy_to_xywh)
from dia_ode.tasks.coco_eval import METRICS, coco_metrics


def _random_boxes(n, seed, size=50.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + 1
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g)


def _brute_force_nms(boxes, scores, threshold):
    """The definition, one pair at a time: visit boxes by falling score, keep one unless it overlaps a
    kept box by more than the threshold."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept = []
    for i in order:
        if all(float(box_iou(boxes[i:i + 1], boxes[j:j + 1])) <= threshold for j in kept):
            kept.append(i)
    return kept


def test_box_formats_areas_and_iou():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 25.0]])
    torch.testing.assert_close(xywh_to_xyxy(xyxy_to_xywh(boxes)), boxes)
    torch.testing.assert_close(box_area(boxes), torch.tensor([100.0, 200.0]))
    iou = box_iou(boxes, boxes)
    torch.testing.assert_close(iou, torch.tensor([[1.0, 25 / 275], [25 / 275, 1.0]]))
    torch.testing.assert_close(flip_boxes(flip_boxes(boxes, 32), 32), boxes)
    torch.testing.assert_close(flip_boxes(boxes[:1], 32), torch.tensor([[22.0, 0.0, 32.0, 10.0]]))
    torch.testing.assert_close(clip_boxes(torch.tensor([[-3.0, 2.0, 40.0, 50.0]]), 32, 20),
                               torch.tensor([[0.0, 2.0, 20.0, 32.0]]))
    assert box_iou(torch.tensor([[0.0, 0.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0, 0.0]])).item() == 0.0


@pytest.mark.parametrize("seed, threshold", [(0, 0.5), (1, 0.3), (2, 0.7), (3, 0.0)])
def test_nms_matches_the_brute_force_definition(seed, threshold):
    boxes, scores = _random_boxes(60, seed)
    assert nms(boxes, scores, threshold).tolist() == _brute_force_nms(boxes, scores, threshold)
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


def test_batched_nms_suppresses_within_each_class_only():
    boxes, scores = _random_boxes(80, 5)
    classes = torch.randint(0, 3, (80,), generator=torch.Generator().manual_seed(5))
    kept = set(batched_nms(boxes, scores, classes, 0.4).tolist())
    expected = set()
    for c in range(3):
        members = (classes == c).nonzero().flatten()
        expected |= {int(members[i]) for i in _brute_force_nms(boxes[members], scores[members], 0.4)}
    assert kept == expected
    same = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    assert len(batched_nms(same, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5)) == 2  # two classes: both


@pytest.fixture(scope="module")
def scenes():
    return digit_scenes(n_train=40, n_val=10, n_test=20, seed=3)


def test_every_box_holds_its_object_tightly_and_nothing_visible_lies_outside_the_boxes(scenes):
    for split in (scenes.train, scenes.val, scenes.test):
        for image, boxes, labels in zip(split.images, split.boxes, split.labels):
            assert 2 <= len(boxes) <= 4 and len(labels) == len(boxes)
            visible = image[0] >= VISIBLE
            covered = torch.zeros_like(visible)
            for x0, y0, x1, y1 in boxes.long().tolist():
                assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
                covered[y0:y1, x0:x1] = True
                inside = visible[y0:y1, x0:x1]  # tight: every edge row and column has a visible pixel
                assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert not (visible & ~covered).any()


def test_train_val_and_test_scenes_come_from_disjoint_digits_and_the_generator_is_seeded(scenes):
    used = {name: set(torch.cat(getattr(scenes, name).sources).tolist()) for name in ("train", "val", "test")}
    assert not used["train"] & used["test"] and not used["train"] & used["val"] and not used["val"] & used["test"]
    again = digit_scenes(n_train=40, n_val=10, n_test=20, seed=3)
    assert torch.equal(again.train.images, scenes.train.images)
    assert all(torch.equal(a, b) for a, b in zip(again.test.boxes, scenes.test.boxes))
    other = digit_scenes(n_train=40, n_val=10, n_test=20, seed=4)
    assert not torch.equal(other.train.images, scenes.train.images)
    assert scenes.num_classes == 10 and scenes.image_size == 64 and len(scenes.train) == 40


def test_overlap_between_objects_stays_bounded():
    from sklearn.datasets import load_digits
    digits = load_digits()
    sources = torch.from_numpy((digits.images * 16).clip(0, 255).astype("uint8"))[:, None]
    split = compose_scenes(sources, torch.from_numpy(digits.target).long(), torch.arange(100), 30,
                           max_overlap=0.0, seed=1)
    for boxes in split.boxes:  # disjoint squares: the tight boxes inside them cannot overlap
        iou = box_iou(boxes, boxes)
        assert (iou - torch.eye(len(boxes))).abs().max() == 0


def test_coco_export_has_one_based_categories_and_xywh_boxes(scenes):
    coco = to_coco(scenes.test, scenes.categories)
    assert len(coco["images"]) == 20 and [c["id"] for c in coco["categories"]] == list(range(1, 11))
    assert len(coco["annotations"]) == sum(len(b) for b in scenes.test.boxes)
    first = coco["annotations"][0]
    x0, y0, x1, y1 = scenes.test.boxes[0][0].tolist()
    assert first["bbox"] == [x0, y0, x1 - x0, y1 - y0] and first["area"] == (x1 - x0) * (y1 - y0)
    assert first["category_id"] == int(scenes.test.labels[0][0]) + 1 and first["image_id"] == 1


def _detections(coco, shift=0.0):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9,
             "bbox": [a["bbox"][0] + shift * a["bbox"][2], a["bbox"][1], a["bbox"][2], a["bbox"][3]]}
            for a in coco["annotations"]]


def test_cocoeval_scores_a_perfect_prediction_one_and_a_shifted_one_less(scenes):
    coco = to_coco(scenes.test, scenes.categories)
    perfect = coco_metrics(coco, _detections(coco))
    assert set(perfect) == set(METRICS)
    assert perfect["ap"] == pytest.approx(1.0) and perfect["ap50"] == pytest.approx(1.0)
    assert perfect["ar100"] == pytest.approx(1.0)
    shifted = coco_metrics(coco, _detections(coco, shift=0.3))  # IoU 0.54: counts at .50, not at .75
    assert shifted["ap50"] == pytest.approx(1.0) and shifted["ap75"] == pytest.approx(0.0) and shifted["ap"] < 0.5
    far = coco_metrics(coco, _detections(coco, shift=0.6))  # IoU 0.25: a miss at every threshold
    assert far["ap50"] == pytest.approx(0.0)
    assert coco_metrics(coco, []) == dict.fromkeys(METRICS, 0.0)
    assert math.isnan(perfect["ap_large"])  # no object above 96^2 pixels on a 64x64 canvas: undefined


# ---- the detector, its targets and the task ---------------------------------------------------------------

def _perfect_outputs(targets, num_classes, size, stride):
    """Head outputs that encode the targets exactly: the target heatmap as logits, sizes and offsets."""
    from dia_ode.tasks.centernet_loss import centernet_targets

    t = centernet_targets(targets, num_classes, size // stride, size // stride, stride)
    heat = t["heatmap"].clamp(1e-6, 1 - 1e-6)
    outputs = {"heatmap": torch.log(heat / (1 - heat)), "size": torch.zeros(len(targets), 2, size // stride,
                                                                              size // stride),
               "offset": torch.zeros(len(targets), 2, size // stride, size // stride)}
    for name in ("size", "offset"):
        flat = outputs[name].flatten(2)
        flat[t["image"], :, t["cell"]] = t[name]
    return outputs, t


def test_centernet_encoding_decodes_back_to_the_boxes_and_scores_ap_one(scenes):
    from dia_ode.models import create_model
    from dia_ode.tasks.detection import detection_dicts, ground_truth

    detector = create_model("resnet20", head="detection", num_classes=10, in_channels=1, base_width=4)
    split = scenes.test
    targets = [{"boxes": b, "labels": l, "image_id": int(i)} for b, l, i in zip(split.boxes, split.labels, split.ids)]
    outputs, t = _perfect_outputs(targets, 10, 64, detector.stride)
    assert detector.stride == 4 and t["heatmap"].amax() == 1.0
    assert int((t["heatmap"] == 1).sum()) == len(t["cell"])  # one peak per object (distinct centres here)
    decoded = detector.decode(outputs)
    for target, found in zip(targets, decoded):
        assert len(found["boxes"]) == len(target["boxes"])
        matched = box_iou(found["boxes"], target["boxes"]).amax(dim=0)
        assert bool((matched > 0.999).all())
    detections = [d for target, found in zip(targets, decoded) for d in detection_dicts(target["image_id"], found)]
    truth = [(tg["image_id"], tg["boxes"], tg["labels"]) for tg in targets]
    assert coco_metrics(ground_truth(truth, 10), detections)["ap"] == pytest.approx(1.0)


def test_box_augmentation_moves_boxes_with_their_objects_and_is_seeded(scenes):
    from dia_ode.data.detection_batches import BoxAugment

    split = scenes.train
    x = split.images[:8].float() / 255
    targets = [{"boxes": split.boxes[i], "labels": split.labels[i], "image_id": i + 1} for i in range(8)]
    flipped, moved = BoxAugment(scale=(1.0, 1.0), flip=True)(x, targets, torch.Generator().manual_seed(0))
    flips = 0
    for image, after, moved_target, target in zip(x, flipped, moved, targets):
        if torch.equal(image, after):  # not flipped
            assert torch.equal(moved_target["boxes"], target["boxes"])
        else:
            flips += 1
            assert torch.equal(after, image.flip(-1))
            assert torch.equal(moved_target["boxes"], flip_boxes(target["boxes"], 64))
    assert 0 < flips < 8
    jitter = BoxAugment(scale=(0.7, 1.3))
    a = jitter(x, targets, torch.Generator().manual_seed(5))
    b = jitter(x, targets, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and all(torch.equal(p["boxes"], q["boxes"]) for p, q in zip(a[1], b[1]))
    for image, target in zip(*a):  # every kept box still frames something bright
        for x0, y0, x1, y1 in target["boxes"].tolist():
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            assert image[0, int(y0):int(y1) + 1, int(x0):int(x1) + 1].max() > 0.3


def test_detection_batches_split_over_ranks_like_one_process(scenes):
    from dia_ode.data.detection_batches import BoxAugment, iterate_detection_batches

    def run(shard):
        return list(iterate_detection_batches(scenes.train, 10, mean=scenes.mean, std=scenes.std, shuffle=True,
                                              generator=torch.Generator().manual_seed(1), augment=BoxAugment(),
                                              shard=shard))
    whole, parts = run((0, 1)), [run((r, 2)) for r in range(2)]
    for (x, t), (x0, t0), (x1, t1) in zip(whole, *parts):
        assert torch.equal(torch.cat([x0, x1]), x)
        assert [d["image_id"] for d in t] == [d["image_id"] for d in t0 + t1]


def test_a_backbone_without_multi_scale_maps_has_no_detector():
    from dia_ode.models import create_model
    with pytest.raises(ValueError, match="no multi-scale maps"):
        create_model("odenet", head="detection", num_classes=10, in_channels=1)
    with pytest.raises(ValueError, match="unknown head"):
        create_model("resnet20", head="segmentation")


def test_train_detection_through_the_cli_writes_coco_metrics_and_refuses_a_dataset_of_another_task(tmp_path):
    from click.testing import CliRunner

    from dia_ode.cli import main

    def train(*args):
        return CliRunner().invoke(main, ["train", "--no-progress", "--out", str(tmp_path), *map(str, args)])

    done = train("--task", "detection", "--dataset", "digit-scenes", "--model", "resnet20", "--model-option",
                 "base_width=4", "--epochs", 1, "--train-examples", 16, "--batch-size", 8)
    assert done.exit_code == 0, done.output
    (run_dir,) = tmp_path.iterdir()
    import json
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["task"] == "detection" and {"test_ap", "test_ap50", "test_ar100"} <= set(summary)
    assert 0.0 <= summary["test_ap50"] <= 1.0 and "best_val_ap" in summary
    # digit scenes hold no large objects: the metric stays in summary.json but no line prints "nan"
    final = [line for line in done.output.splitlines() if " on digit-scenes: " in line]
    assert summary["test_ap_large"] is None and len(final) == 1 and "nan" not in final[0]  # strict JSON: NaN -> null
    _detect_writes_predictions_metrics_and_figures(run_dir, tmp_path / "detect", main)
    for args, needle in ((("--dataset", "digit-scenes"), "'digit-scenes' is not a classification dataset"),
                         (("--task", "detection", "--dataset", "digits"), "'digits' is not a detection dataset")):
        refused = train(*args, "--out", str(tmp_path / "refused"))
        assert refused.exit_code == 2 and needle in refused.output, refused.output
        assert "Traceback" not in refused.output


def test_the_detection_task_brings_its_own_training_defaults_and_the_user_still_wins():
    from dataclasses import asdict

    from dia_ode.engine import TrainConfig, recipe_config

    values = {**asdict(TrainConfig()), "task": "detection"}
    cfg = recipe_config(values, {"task"})
    assert (cfg.dataset, cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs) == ("digit-scenes", "adamw", 2e-3, 32, 12)
    mine = recipe_config({**values, "lr": 0.01, "epochs": 3}, {"task", "lr", "epochs"})
    assert (mine.lr, mine.epochs, mine.optimizer) == (0.01, 3, "adamw")
    assert recipe_config(asdict(TrainConfig()), set()).dataset == "digits"  # classification keeps its own


def _detect_writes_predictions_metrics_and_figures(run_dir, out, main):
    import json

    from click.testing import CliRunner
    from PIL import Image

    def detect(*args):
        return CliRunner().invoke(main, ["detect", str(run_dir), "--out", str(out), *map(str, args)])

    on_split = detect("--split", "test", "--show", 2)
    assert on_split.exit_code == 0, on_split.output
    (first,) = out.iterdir()
    summary = json.loads((first / "detect.json").read_text())
    assert summary["images"] == 500 and set(summary["metrics"]) >= {"ap", "ap50", "ar100"}
    predictions = json.loads((first / "predictions.json").read_text())
    truth = json.loads((first / "ground_truth.json").read_text())
    assert len(truth["images"]) == 500 and {p["image_id"] for p in predictions} <= {i["id"] for i in truth["images"]}
    assert coco_metrics(truth, predictions)["ap"] == pytest.approx(summary["metrics"]["ap"])  # the same scoring
    assert len(predictions) == summary["detections"] and all(len(p["bbox"]) == 4 for p in predictions)
    assert (first / "figures" / "detections.png").is_file() and (first / "figures" / "detections.pdf").is_file()
    folder = out.parent / "images"
    folder.mkdir()
    for k in range(2):
        Image.fromarray((torch.rand(48, 80) * 255).byte().numpy()).save(folder / f"photo{k}.png")
    on_files = detect("--images", folder)
    assert on_files.exit_code == 0, on_files.output
    newest = max(out.iterdir(), key=lambda p: p.name)
    assert json.loads((newest / "detect.json").read_text())["files"] == ["photo0.png", "photo1.png"]
    (folder / "broken.png").write_bytes(b"not an image")
    broken = detect("--images", folder)  # skipped with a warning, as the COCO loader skips an undecodable image
    assert broken.exit_code == 0 and "skipped 1 image(s)" in broken.output and "broken.png" in broken.output
    both = detect("--images", folder, "--split", "test")
    assert both.exit_code == 2 and "not both" in both.output


def test_fashion_scenes_take_test_objects_from_the_test_images_only(tmp_path, fake_mnist):
    from dia_ode.data.scenes import fashion_scenes

    fake_mnist(tmp_path, gz=True, n_train=40, n_test=10)
    data = fashion_scenes(tmp_path, n_train=12, n_val=4, n_test=6, seed=2)
    used = {name: set(torch.cat(getattr(data, name).sources).tolist()) for name in ("train", "val", "test")}
    assert all(i < 40 for i in used["train"] | used["val"]) and all(i >= 40 for i in used["test"])
    assert not used["train"] & used["val"]
    assert data.flip and data.categories[0] == "t-shirt" and data.name == "fashion-scenes"


def test_the_vit_detector_reads_its_single_scale_and_learns_on_one_batch(scenes):
    from dia_ode.models import create_model
    from dia_ode.tasks.centernet_loss import centernet_loss

    torch.manual_seed(0)
    vit = create_model("dia_vit_tiny", head="detection", num_classes=10, in_channels=1, image_size=64, dim=32,
                       depth=2, heads=2)
    assert vit.stride == vit.backbone.feature_info[0].stride
    x = scenes.train.images[:8].float() / 255
    targets = [{"boxes": scenes.train.boxes[i], "labels": scenes.train.labels[i], "image_id": i + 1} for i in range(8)]
    optimizer = torch.optim.AdamW(vit.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        loss, parts = centernet_loss(vit(x), targets, vit.stride)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0] and set(parts) == {"heatmap", "size", "offset"}
