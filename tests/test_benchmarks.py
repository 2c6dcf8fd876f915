"""The benchmarks' own machinery: the notes-style loop trains the same method as the pipeline."""

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.perf_training import (
    PerItemAugmenter,
    notes_style_batches,
    pseudo_label_everything,
    training_throughput,
)
from pipeline.config import AugmentConfig, load_config
from pipeline.trainer import Trainer

from toy import toy_training_data

TOY = ["preprocess.spatial_size=[16,16]", "network.channels=[8,16]", "train.threads=2",
       "train.batch_size=8", "train.unlabelled_batch_size=16"]


def test_round_based_methods_are_timed_with_every_unlabelled_image_pseudo_labelled(tmp_path):
    data = toy_training_data()
    for name in ("self_training", "co_training", "co_teaching"):
        trainer = Trainer(load_config(None, [f"method.name={name}", *TOY]), data, tmp_path, progress=False)
        assert trainer.method.unlabelled_pool() is not None and len(trainer.method.unlabelled_pool()) == 0
        pseudo_label_everything(trainer.method, data)
        assert len(trainer.method.unlabelled_pool()) == len(data.unlabelled), name


def test_notes_style_batches_zip_per_item_loaders_over_the_same_images(tmp_path):
    data = toy_training_data()
    trainer = Trainer(load_config(None, ["method.name=fixmatch", *TOY]), data, tmp_path, progress=False)
    pixels = (data.images[:, 0] * 255).round().to(torch.uint8).numpy()
    batches = notes_style_batches(trainer, data, pixels)
    labelled, labels, unlabelled, positions = next(batches)
    assert labelled.shape == (8, 1, 16, 16) and unlabelled.shape == (16, 1, 16, 16)
    expected = data.images[data.unlabelled[positions]]
    torch.testing.assert_close(unlabelled, torch.round(expected * 255) / 255)
    assert set(labels.tolist()) <= set(data.labels[data.labelled].tolist())
    # 15 labelled images in batches of 8: the zip restarts both loaders after 2 batches
    assert [len(next(batches)[1]) for _ in range(3)] == [7, 8, 7]


def test_per_item_views_keep_shape_and_differ_from_the_input():
    augment = PerItemAugmenter(AugmentConfig(), (16, 16), seed=0)
    images = toy_training_data().images[:4]
    for view in (augment.weak, augment.strong):
        out = view(images)
        assert out.shape == images.shape and type(out) is torch.Tensor
        assert not torch.allclose(out, images)


def test_training_throughput_measures_both_loops(tmp_path):
    config = load_config(None, ["method.name=fixmatch", *TOY])
    result = training_throughput(config, toy_training_data(), steps=2, warmup=1)
    for side in ("pipeline", "notes_loop"):
        assert result[side]["samples_per_second"] > 0
    assert result["ratio"] > 0
    for side in ("pipeline", "notes_loop"):
        timed = result[side]
        assert timed["data_seconds_per_step"] > 0 and timed["view_seconds_per_step"] > 0
        assert timed["compute_seconds_per_step"] > 0


def test_lesion_breakdown_scores_each_lesion_group_against_all_healthy_scans(tmp_path):
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from benchmarks.volumes import breakdown_rows, lesion_breakdown

    scans, run = tmp_path / "scans", tmp_path / "run"
    scans.mkdir()
    run.mkdir()
    truth = pd.DataFrame({
        "file": [f"vol_{i}.nii.gz" for i in range(6)],
        "label": ["healthy", "healthy", "abnormal", "abnormal", "abnormal", "abnormal"],
        "lesions": [0, 0, 1, 2, 1, 1], "hyper_lesions": [0, 0, 1, 1, 0, 1],
        "hypo_lesions": [0, 0, 0, 1, 1, 0], "subtle_lesions": [0, 0, 0, 0, 1, 1],
    })
    truth.to_csv(scans / "truth.csv", index=False)
    p = [0.1, 0.5, 0.3, 0.9, 0.8, 0.05]  # hyper-only scans score low, hypo ones high
    pd.DataFrame({"scan_id": [f"vol_{i}.nii.gz" for i in range(6)], "label": truth["label"],
                  "p_healthy": [1 - v for v in p], "p_abnormal": p}).to_csv(run / "test_predictions.csv", index=False)
    config = load_config(None, [f"data.scans={scans}", "data.positive_class=abnormal"])
    groups = lesion_breakdown(run, config)
    assert groups["a hypo-intense lesion"] == {"n": 2, "auroc": 1.0}
    hyper = groups["hyper-intense lesions only"]
    assert hyper["n"] == 2 and hyper["auroc"] == roc_auc_score([0, 0, 1, 1], [0.1, 0.5, 0.3, 0.05])
    assert groups["subtle lesions only"]["n"] == 2
    rows = breakdown_rows([{"method": "pi_model", "lesion_breakdown": groups}])
    assert rows[0]["a hypo-intense lesion (n)"] == "1.000 (2)"
    truth.drop(columns="hypo_lesions").to_csv(scans / "truth.csv", index=False)
    assert lesion_breakdown(run, config) is None  # an older truth.csv without lesion types


def test_target_verdict_marks_the_volumes_bar_met_or_not():
    from benchmarks.volumes import target_verdict

    assert target_verdict("volumes", 0.951).endswith("0.95 ✓.")
    assert "✗" in target_verdict("volumes", 0.949)
    assert target_verdict("pneumoniamnist", 0.99) == ""


def test_resolution_benchmark_times_the_planned_step_and_its_views():
    from benchmarks.perf_resolution import measure, planned_case

    case = planned_case("pi_model", 2, 16, "float32", steps=1, warmup=1)
    assert case["batches"] == [64, 128] and case["stem_stride"] == 1
    row = measure({**case, "batches": [8, 8], "dropout_kind": "element"})
    assert 0 < row["view_seconds_per_step"] < row["seconds_per_step"]
    assert row["samples_per_second"] == pytest.approx(16 / row["seconds_per_step"])


def test_lever_switches_restore_the_loop_optimiser_and_monai_views(monkeypatch):
    from monai.networks.layers import AffineTransform

    from benchmarks.perf_resolution import measure, planned_case

    made, warped = [], []
    adamw = torch.optim.AdamW

    def recording_adamw(*args, **kwargs):
        made.append(kwargs)
        return adamw(*args, **kwargs)

    forward = AffineTransform.forward
    monkeypatch.setattr(torch.optim, "AdamW", recording_adamw)
    monkeypatch.setattr(AffineTransform, "forward", lambda self, *a, **k: warped.append(1) or forward(self, *a, **k))
    case = {**planned_case("pi_model", 2, 16, "float32", steps=1, warmup=1), "batches": [8, 8]}
    row = measure(case)
    assert made[-1].get("fused") and not warped and row["optimiser_seconds_per_step"] > 0
    row = measure({**case, "optimizer": "loop", "views": "affine_grid"})
    assert made[-1] == {"lr": 0.003, "weight_decay": 0.0005, "foreach": False} and warped
    assert 0 < row["optimiser_seconds_per_step"] < row["seconds_per_step"]


def test_auroc_standard_error_matches_the_spread_of_simulated_test_sets():
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from benchmarks.real import auroc_standard_error

    rng = np.random.default_rng(0)
    n_positive, n_negative = 30, 90
    labels = np.r_[np.ones(n_positive), np.zeros(n_negative)]
    aurocs = [roc_auc_score(labels, np.r_[rng.normal(1.2, 1, n_positive), rng.normal(0, 1, n_negative)])
              for _ in range(1000)]
    predicted = auroc_standard_error(float(np.mean(aurocs)), n_positive, n_negative)
    assert abs(predicted - np.std(aurocs)) < 0.15 * np.std(aurocs)
    assert auroc_standard_error(0.8, 300, 900) < predicted / 2  # ten times the scans: about a third
    assert np.isnan(auroc_standard_error(0.8, 0, 90))


def test_draws_for_an_interval_are_the_fewest_whose_95_percent_interval_is_that_narrow():
    import numpy as np

    from benchmarks.real import draws_for_interval, paired_interval

    differences = np.array([0.039, -0.028, -0.007, 0.082, -0.139, -0.077, -0.036, -0.016, 0.036, -0.066])
    needed = int(draws_for_interval(differences))
    sd = differences.std(ddof=1)
    for n, narrow_enough in ((needed, True), (needed - 1, False)):  # the spread kept, n draws
        z = np.random.default_rng(n).normal(size=n)
        draws = differences.mean() + sd * (z - z.mean()) / z.std(ddof=1)
        low, high = paired_interval(draws)[1:]
        assert ((high - low) / 2 <= 0.03 + 1e-9) is narrow_enough, n
    assert needed == 21  # covid_cxr's spread: 21 draws, against the 10 run
    assert draws_for_interval(differences / 10) == 3  # a tenth of the spread
    assert np.isnan(draws_for_interval(differences[:1]))


def test_the_baseline_run_takes_the_default_methods_plan_except_its_method():
    from benchmarks.real import shared_plan
    from pipeline.config import load_config

    planned = {"preprocess.spatial_size": [24, 24, 24], "preprocess.target_spacing": [], "preprocess.orientation": "RAS",
               "train.precision": "bfloat16", "train.batch_size": 8, "network.dropout": 0.1,
               "method.name": "pi_model", "method.pi_model.entropy_weight": 0.3}
    overrides = shared_plan(planned)
    assert not any(o.startswith("method.") for o in overrides)
    config = load_config(None, [*overrides, "method.name=supervised"])
    assert config.preprocess.spatial_size == [24, 24, 24] and config.preprocess.target_spacing == []
    assert (config.preprocess.orientation, config.train.precision, config.train.batch_size) == ("RAS", "bfloat16", 8)
    assert config.method["name"] == "supervised"


def test_plan_summary_names_the_draws_where_the_plans_differ():
    from benchmarks.real import plan_summary

    def plan(size, precision):
        return {"preprocess.spatial_size": [size] * 3, "preprocess.intensity": "minmax", "train.batch_size": 8,
                "train.unlabelled_batch_size": 16, "train.precision": precision}

    runs = pd.DataFrame({"draw": [2, 0, 1], "plan": [plan(28, "float32"), plan(24, "float32"), plan(28, "float32")]})
    summary = plan_summary(runs)
    assert summary["spatial size"] == "24x24x24 (draw 0); 28x28x28 (draws 1, 2)"
    assert summary["precision"] == "float32" and summary["batches"] == "8 + 16"


def test_rerun_repeats_only_another_commits_runs_each_with_its_own_plan(tmp_path, monkeypatch):
    from benchmarks import real

    monkeypatch.setattr(real, "RESULTS", tmp_path)
    monkeypatch.setattr(real, "HERE", tmp_path)
    monkeypatch.setattr(real, "commit", lambda: "new")
    monkeypatch.setattr(real, "build_page", lambda sets: "page")
    (tmp_path / real.SUITE).mkdir()
    stored = {0: {"commit": "old", "run": "a", "plan": {"train.batch_size": 8}},
              1: {"commit": "new", "run": "b", "plan": {"train.batch_size": 8}}}
    for draw, result in stored.items():
        real.result_path("set", "pi_model", draw).write_text(json.dumps(result))
    calls = []
    monkeypatch.setattr(real, "run_one", lambda name, spec, method, draw, plan_from=None:
                        calls.append((name, method, draw, plan_from)))
    real.rerun("pi_model", ["set"], {"set": {"scans": "x"}}, draws=3)
    assert calls == [("set", "pi_model", 0, stored[0])]  # draw 1 is this commit's, draw 2 was never run


def test_the_page_names_re_run_baseline_runs_apart_from_first_ones():
    from benchmarks.real import DEFAULT_METHOD as D
    from benchmarks.real import _rerun_note

    frame = pd.DataFrame([
        {"set": "s", "draw": 0, "run": f"s_{D}_1", "method": D, "plan_from": None, "commit": "a",
         "date": "d1"},
        {"set": "s", "draw": 0, "run": "s_supervised_2", "method": "supervised", "plan_from": f"s_{D}_1",
         "commit": "a", "date": "d1"},  # first run
        {"set": "s", "draw": 1, "run": "s_supervised_4", "method": "supervised", "plan_from": "s_supervised_2",
         "commit": "b", "date": "d2"},  # a re-run
        # a small pool: the plan trained the default method's run as supervised, and the baseline took its plan
        {"set": "t", "draw": 0, "run": "t_supervised_5", "method": D, "plan_from": None, "commit": "b",
         "date": "d2"},
        {"set": "t", "draw": 0, "run": "t_supervised_6", "method": "supervised", "plan_from": "t_supervised_5",
         "commit": "b", "date": "d2"},
    ])
    note = " ".join(_rerun_note(frame))
    assert "`supervised` runs re-run on a later commit (1 on b" in note
    assert f"`{D}` runs re-run" not in note


def test_the_page_counts_the_baseline_runs_that_mixed_their_labelled_scans():
    from benchmarks.real import DEFAULT_METHOD as D
    from benchmarks.real import _baseline_mixup_note

    key = "method.supervised.mixup_alpha"
    frame = pd.DataFrame([
        {"method": "supervised", "plan": {key: 0.75}},  # planned
        {"method": "supervised", "plan": {}, "settings": [f"{key}=0.75"]},  # a variant's --set
        {"method": "supervised", "plan": {}, "settings": [f"{key}=0"]},
        {"method": "supervised", "plan": {}},  # before the plan set it
        {"method": D, "plan": {key: 0.75}},  # not a baseline run
    ])
    note = " ".join(_baseline_mixup_note(frame))
    assert note.startswith("2 of the 4 `supervised` runs mixed") and "against the plain baseline" in note
    assert "the others" not in " ".join(_baseline_mixup_note(frame.iloc[:2]))
    assert _baseline_mixup_note(frame.iloc[4:]) == []
    assert " ".join(_baseline_mixup_note(frame.iloc[2:])).startswith("None of the 2 `supervised` runs mixed")


def test_the_page_names_the_sets_where_a_new_user_s_run_trains_another_method():
    from benchmarks.real import DEFAULT_METHOD as D
    from benchmarks.real import _planned_method_note

    frame = pd.DataFrame([
        {"set": "xray", "method": D, "planned_method": "supervised"},  # 2D pictures: the mixed baseline
        {"set": "xray", "method": D, "planned_method": None},  # before runs recorded it
        {"set": "masks", "method": D, "planned_method": D},
        {"set": "masks", "method": "supervised", "planned_method": "supervised"},  # a baseline run names its own
    ])
    assert _planned_method_note(frame) == [f"`xray`: a new user's run trains `supervised` (the plan's choice in 1 "
                                           f"of its `{D}` runs), not the default SSL method.\n"]
    assert _planned_method_note(frame.drop(columns="planned_method")) == []
    # a small pool: the plan trained a default-method run as supervised, which the page says too
    from benchmarks.real import _fallback_note

    frame["trained_method"] = ["supervised", D, D, "supervised"]
    assert _fallback_note(frame) == [f"`xray`: in 1 of its `{D}` runs the plan trained `supervised` instead (too "
                                     "few unlabelled scans for the default method), so those draws' paired "
                                     "difference compares two such runs.\n"]


def test_the_page_says_which_default_method_runs_took_the_former_default_s_plan():
    from benchmarks.real import DEFAULT_METHOD as D
    from benchmarks.real import _borrowed_plan_note, _rerun_note

    frame = pd.DataFrame([
        {"set": "s", "draw": 0, "run": "s_pi_model_1", "method": "pi_model", "plan_from": None, "commit": "a",
         "date": "d1"},
        {"set": "s", "draw": 0, "run": "s_supervised_2", "method": "supervised", "plan_from": "s_pi_model_1",
         "commit": "a", "date": "d1"},
        {"set": "s", "draw": 0, "run": f"s_{D}_3", "method": D, "plan_from": "s_pi_model_1", "commit": "c",
         "date": "d3"},  # measured on the draw with --into, then adopted
        {"set": "s", "draw": 1, "run": f"s_{D}_4", "method": D, "plan_from": None, "commit": "c", "date": "d4"},
        {"set": "s", "draw": 1, "run": "s_pi_model_5", "method": "pi_model", "plan_from": "s_pi_model_0",
         "commit": "c", "date": "d4"},  # a re-run of the former default keeps its note
    ])
    assert D != "pi_model"
    assert _borrowed_plan_note(frame) == [
        f"1 `{D}` runs (d3 to d3) took as overrides the settings their draw's `pi_model` run planned (inputs, "
        "network, augmentation, batch sizes, precision), as the baseline's runs did, so that all three of a draw "
        "train with one plan and budget; the `pi_model` rows are those runs.\n"]
    assert "`pi_model` runs re-run on a later commit (1 on c" in " ".join(_rerun_note(frame))
    assert _borrowed_plan_note(frame[frame["plan_from"].isna()]) == []


def test_abnormal_among_skipped_pools_the_draws_skipped_scans():
    from benchmarks.real import _pooled_miss

    runs = pd.DataFrame({"n_test": [100, 100], "skip_fraction": [0.01, 0.99],
                         "abnormal_among_skipped": [1.0, 1 / 99]})  # 1 of 1 skipped, then 1 of 99
    assert _pooled_miss(runs) == "2.0% (2 of 100)"  # not the mean of the shares, 50.5%
    assert _pooled_miss(runs.assign(skip_fraction=0.0, abnormal_among_skipped=0.0)) == "- (none skipped)"


def test_active_counts_the_abnormal_scans_each_arm_added_by_the_held_back_truth(tmp_path):
    from benchmarks.active import _positives_added, added_positives

    split = tmp_path / "s.split.csv"
    pd.DataFrame({"scan_id": ["a", "b", "c", "d"], "subset": ["labelled", "unlabelled", "unlabelled", "unlabelled"],
                  "label": ["sick", "sick", "well", "sick"], "group": ""}).to_csv(split, index=False)
    assert added_positives(split, ["b", "c"], "sick") == 1
    assert added_positives(split, ["c"], "sick") == 0
    frame = pd.DataFrame({"set": "v", "draw": [0, 0, 1, 1], "arm": ["suggested", "random"] * 2,
                          "n_added_positive": [0, 3, 2, 1]})
    assert _positives_added(frame, "v") == "0 / 3, 2 / 1"
    unpaired = pd.concat([frame, pd.DataFrame({"set": ["v"], "draw": [2], "arm": ["suggested"], "n_added_positive": [4]})])
    assert _positives_added(unpaired, "v") == "0 / 3, 2 / 1"  # a draw whose second arm has not run
    assert _positives_added(frame.drop(columns="n_added_positive"), "v") == "-"


def test_pool_subset_keeps_the_test_split_the_reserve_and_a_pool_at_the_sets_mix(tmp_path):
    from benchmarks.pool_subset import pool_subset

    source = tmp_path / "set"
    (source / "scans").mkdir(parents=True)
    rows = [(f"scans/{split}_{label}_{i}.png", label, split)
            for split, counts in (("test", {"well": 5, "sick": 3}), ("train", {"well": 60, "sick": 20}))
            for label, n in counts.items() for i in range(n)]
    for file, _, _ in rows:
        (source / file).write_bytes(file.encode())
    pd.DataFrame(rows, columns=["file", "label", "split"]).to_csv(source / "labels.csv", index=False)
    subset = pool_subset(source, tmp_path / "out", pool=40, reserve=10)
    written = pd.read_csv(tmp_path / "out" / "labels.csv")
    assert len(written) == len(subset) == 8 + 20 + 30 + 10  # test, reserve, the pool at 3:1
    assert written.query("split == 'test'").shape[0] == 8
    assert written.query("split != 'test'").groupby("label").size().to_dict() == {"sick": 20, "well": 40}
    assert all((tmp_path / "out" / f).read_bytes() == f.encode() for f in written["file"])
    with pytest.raises(ValueError, match="'sick' has 20 non-test scans"):
        pool_subset(source, tmp_path / "more", pool=40, reserve=25)


def test_photo_folder_keeps_content_and_labels_and_varies_size_mode_and_format(tmp_path):
    from PIL import Image

    from benchmarks.photo_folder import photo_folder

    source = tmp_path / "set"
    (source / "scans").mkdir(parents=True)
    rows = []
    for i in range(40):
        pixels = np.zeros((28, 28), np.uint8)
        pixels[:, : 14 if i % 2 else 7] = 255  # a bright left band, wide for "sick"
        Image.fromarray(pixels).save(source / "scans" / f"s{i}.png")
        rows.append((f"scans/s{i}.png", "sick" if i % 2 else "well", "test" if i < 10 else "train"))
    pd.DataFrame(rows, columns=["file", "label", "split"]).to_csv(source / "labels.csv", index=False)
    copy = photo_folder(source, tmp_path / "out", sides=(64, 128), seed=1)
    written = pd.read_csv(tmp_path / "out" / "labels.csv")
    assert written[["label", "split"]].values.tolist() == [[label, split] for _, label, split in rows]
    photos = [Image.open(tmp_path / "out" / f) for f in written["file"]]
    assert all(64 <= max(p.size) <= 128 for p in photos)
    assert {p.mode for p in photos} == {"L", "RGB", "P"} and set(copy["file"].str[-4:]) == {".png", ".jpg"}
    assert all(p.format == "PNG" for p in photos if p.mode == "P")  # JPEG holds no palette
    for photo, (_, label, _) in zip(photos, rows):  # the band's width, as a share of the width, is kept
        grey = np.asarray(photo.convert("L"), float)
        bright = (grey[grey.shape[0] // 2] > 128).mean()
        assert abs(bright - (0.5 if label == "sick" else 0.25)) < 0.05
    with pytest.raises(ValueError, match="--sides 90 60"):
        photo_folder(source, tmp_path / "bad", sides=(90, 60))
    with pytest.raises(ValueError, match="no labels.csv"):
        photo_folder(tmp_path / "out" / "scans", tmp_path / "bad")


def test_a_panel_folder_with_a_labels_file_is_run_without_an_entry(tmp_path, monkeypatch):
    from benchmarks import real

    panel = tmp_path / "panel"

    def folder(name, rows, header="file,label"):
        (panel / name).mkdir(parents=True)
        (panel / name / "labels.csv").write_text(header + "\n" + "\n".join(rows) + "\n")

    # a split column: 20 of the 100 pneumonia scans are test scans, so 80 can be drawn (a quarter: 20)
    folder("xray", [f"n{i}.png,normal,{'test' if i < 50 else 'train'}" for i in range(200)]
           + [f"p{i}.png,pneumonia,{'test' if i < 20 else 'train'}" for i in range(100)], "file,label,split")
    folder("mri", [f"{c}{i}.png,{c}" for c in ("glioma", "meningioma", "No Tumour") for i in range(60)])
    folder("rare", [f"x{i}.png,x" for i in range(100)] + [f"y{i}.png,y" for i in range(12)])
    folder("tiny", [f"x{i}.png,x" for i in range(5)] + [f"y{i}.png,y" for i in range(5)])
    folder("listed", ["a.png,a", "b.png,b"])
    (panel / "unlabelled_only").mkdir()
    sets_file = tmp_path / "sets.toml"
    sets_file.write_text(f'[listed]\nscans = "{panel / "listed"}"\npositive = "b"\nlabels_per_class = 1\nminutes = 1.0\n')
    monkeypatch.setattr(real, "SETS_FILE", sets_file)

    sets = real.load_sets(panel)
    assert list(sets) == ["listed", "mri", "rare", "xray"]  # the sets file's first; no labels or too few: none
    assert "assumed" not in sets["listed"] and sets["listed"]["labels_per_class"] == 1
    assert sets["xray"]["positive"] == "pneumonia" and sets["xray"]["labels_per_class"] == 20
    assert sets["mri"]["healthy"] == "No Tumour" and sets["mri"]["labels_per_class"] == 12  # 0.8 * 60 / 4
    assert sets["rare"]["positive"] == "y" and sets["rare"]["labels_per_class"] == 2
    assert "the rarer class" in sets["rare"]["assumed"] and sets["rare"]["minutes"] == 3.0
    command = real.run_command(sets["mri"], "supervised", 2)
    assert command[command.index("--healthy") + 1] == "No Tumour" and "--positive" not in command
    assert command[-1] == "method.name=supervised" and command[command.index("--seed") + 1] == "2"
    # the default SSL method is named too: on 2D pictures the plan would train the mixed baseline instead
    default = real.run_command(sets["xray"], real.DEFAULT_METHOD, 0)
    assert "--positive" in default and default[-1] == f"method.name={real.DEFAULT_METHOD}"
    # The baseline's command with its draw's shared plan is one the CLI accepts, every override read
    # (5b6eba1 put --seed after the first override, and the plan's were refused as unrecognised).
    from pipeline.cli import build_parser

    planned = {"network.channels": [8, 16], "train.batch_size": 8, "method.pi_model.warmup": 0.25}
    command = real.run_command(sets["mri"], "supervised", 2) + real.shared_plan(planned)
    args = build_parser().parse_args(command[command.index("run"):])
    assert args.overrides == ["train.minutes=3.0", "method.name=supervised", "network.channels=[8, 16]",
                              "train.batch_size=8"]


def test_a_variant_s_settings_win_over_the_stored_plan_and_need_a_folder_of_their_own(tmp_path, monkeypatch,
                                                                                       capsys):
    from benchmarks import real

    monkeypatch.setattr(real, "RESULTS", tmp_path)
    monkeypatch.setattr(real, "load_sets", lambda: {"set": {"scans": "x", "positive": "b", "labels_per_class": 5,
                                                                  "minutes": 3.0}})
    monkeypatch.setattr(real, "fill_test_positives", lambda sets: None)
    (tmp_path / real.SUITE).mkdir()
    stored = {"run": "a", "plan": {"train.unlabelled_batch_size": 16}}
    real.result_path("set", real.DEFAULT_METHOD, 0).write_text(json.dumps(stored))
    commands = []

    class Started(Exception):
        pass

    def start(command, **kwargs):  # the first run's command is all this test needs
        commands.append(command)
        raise Started

    monkeypatch.setattr(real.subprocess, "run", start)
    with pytest.raises(Started):
        real.main(["--sets", "set", "--draws", "1", "--into", "wide", "--methods", real.DEFAULT_METHOD,
                   "--set", "train.unlabelled_batch_size=32"])
    command = commands[0]
    assert command.index("train.unlabelled_batch_size=16") < command.index("train.unlabelled_batch_size=32")
    from pipeline.cli import build_parser
    from pipeline.config import load_config

    overrides = build_parser().parse_args(command[command.index("run"):]).overrides
    assert load_config(None, overrides).train.unlabelled_batch_size == 32
    for argv, message in ((["--set", "train.batch_size=8"], "--into FOLDER"),
                          (["--into", "wide", "--set", "train.batch_size"], "KEY=VALUE")):
        with pytest.raises(SystemExit):
            real.main(argv)
        assert message in capsys.readouterr().err


def test_a_variant_s_result_records_the_training_budget_its_run_had(tmp_path, monkeypatch):
    from benchmarks import real

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(real, "RESULTS", tmp_path / "results")
    spec = {"scans": "x", "positive": "b", "labels_per_class": 5, "minutes": 3.0}

    def finished_run(command, **kwargs):  # what `pipeline run` leaves behind, for the result to read
        run = tmp_path / "runs" / "set_run"
        run.mkdir(parents=True)
        (tmp_path / "runs" / "LATEST").write_text(str(run))
        minutes = float(next(item for item in reversed(command) if item.startswith("train.minutes=")).split("=")[1])
        (run / "plan.json").write_text(json.dumps({"settings": {
            "train.minutes": {"value": minutes, "set_by": "user", "planned": None, "reason": ""},
            # the run named its method; the plan would have trained the mixed baseline
            "method.name": {"value": real.DEFAULT_METHOD, "set_by": "user", "planned": "supervised", "reason": ""}}}))
        (run / "train_summary.json").write_text(json.dumps({"method": "pi_model", "steps": 10,
                                                            "wall_seconds": minutes * 60 - 1}))
        (run / "calibration.json").write_text(json.dumps({
            "screening": {"positive_class": "b", "review_low": 0.2, "decision": 0.5},
            "test": {"n": 2, "screening": {"auroc": 1.0, "sensitivity": 1.0, "specificity": 1.0,
                                           "review_fraction": 0.0}}}))
        pd.DataFrame({"label": ["a", "b"], "p_b": [0.1, 0.9]}).to_csv(run / "test_predictions.csv", index=False)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(real.subprocess, "run", finished_run)
    result = real.run_one("set", spec, real.DEFAULT_METHOD, 0, suite="longer", settings=("train.minutes=10",))
    assert result["minutes"] == 10 and result["user"]["minutes"] == 3.0
    assert result["method"] == real.DEFAULT_METHOD and result["planned_method"] == "supervised"
    assert json.loads(real.result_path("set", real.DEFAULT_METHOD, 0, "longer").read_text())["minutes"] == 10
