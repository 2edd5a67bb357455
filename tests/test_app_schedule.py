"""Schedules and the learning-rate finder through the dashboard's widgets (AppTest): what
the Train page's schedule inputs say is what the saved run did; the finder's job ends in
a plot whose suggestion lands in the saved setup; old session files and old runs still
load.  Tiny photos and MobileNetV3-small at random init keep each test to seconds."""
import json

from core.runs.store import list_runs, read_json, write_json
from tests.conftest import ROOT, VISITOR, make_run, owner_of_key, wait_for_jobs
from ui import state as S


def number(at, label):
    return next(n for n in at.number_input if n.label == label)


def captions(at) -> str:
    return " ".join(c.value for c in at.caption)


def tiny_state(path, **more):
    return {S.DATA_SOURCE: "folder", S.FOLDER_PATH: str(path), S.ARCH: "mobilenet_v3_small", S.WEIGHTS: "none", **more}


def test_fine_tune_chosen_on_the_pages_is_what_the_run_did(app, tiny_folders, isolated_dirs):
    at = app("pages/model.py", tiny_state(tiny_folders))
    at.radio(key="_freeze_mode").set_value("none").run()  # "Fine-tune everything"
    assert at.session_state[S.FREEZE] == "none"
    at.switch_page("pages/train.py").run()
    at.selectbox(key="_w.train_cfg.schedule").set_value("standard").run()
    assert "Head-only epochs first" not in [n.label for n in at.number_input]
    assert not at.selectbox(key="_w.train_cfg.scheduler").disabled  # the standard schedule uses it
    at.selectbox(key="_w.train_cfg.schedule").set_value("fine_tune").run()
    shown = at.selectbox(key="_scheduler_of_schedule")  # one-cycle per phase: the stored scheduler is not used
    assert shown.disabled and shown.value == "onecycle"
    number(at, "Head-only epochs first").set_value(1)
    number(at, "Epochs").set_value(2)
    number(at, "Batch size").set_value(8).run()
    assert not at.exception
    assert "fine_tune: 1 head-only epoch, then 1 unfrozen" in captions(at)
    assert any("Random init with **fine_tune**" in w.value for w in at.warning)  # a warning, not a block
    next(b for b in at.button if b.label == "Start").click().run()
    wait_for_jobs(at.session_state[S.SESSION])
    at.run()
    assert not at.exception
    assert any("head-only epochs on cached features, then the unfrozen layers on images" in s.value for s in at.success)
    (run,) = list_runs(isolated_dirs / "runs")
    assert run["config"]["train"]["schedule"] == "fine_tune" and run["config"]["freeze"] == "none"
    assert run["config"]["schedule_text"].startswith("fine_tune: 1 head-only epoch")
    assert [p["name"] for p in run["summary"]["phases"]] == ["frozen", "unfrozen"]
    assert [p["path"] for p in run["summary"]["phases"]] == ["frozen-features", "plain"]


def test_the_learning_rate_finder_from_the_button_to_the_saved_setup(app, tiny_folders, isolated_dirs):
    at = app("pages/train.py", tiny_state(tiny_folders, **{S.FREEZE: "none"}))
    number(at, "Batch size").set_value(8).run()
    assert "alone on cached features (100 steps)" in captions(at)
    next(b for b in at.button if b.label == "Find a learning rate").click().run()
    sid = at.session_state[S.SESSION]
    wait_for_jobs(sid)
    at.run()
    assert not at.exception
    assert any("learning-rate sweep: done after" in s.value for s in at.success)
    assert len(at.get("plotly_chart")) == 1  # the sweep's plot (a sweep has no training curves)
    use = next(b for b in at.button if b.label.startswith("Use "))
    value = float(use.label.removeprefix("Use "))
    assert "Suggested" in captions(at) and "100 steps on the head alone on cached features" in captions(at)
    use.click().run()
    assert not at.exception
    assert number(at, "Learning rate").value == value
    saved = read_json(isolated_dirs / "data" / "sessions" / f"{owner_of_key(sid)}.json")
    assert saved[S.TRAIN_CFG]["lr"] == value and saved[S.LR_FIND]["suggestion"] > 0
    assert next(b for b in at.button if b.label.startswith("Use ")).disabled  # already in use

    # A refresh (new session, same tab id) keeps the plot; a changed setup is flagged.
    from streamlit.testing.v1 import AppTest
    again = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    again.query_params["sid"] = sid
    again.switch_page("pages/train.py").run()
    assert not again.exception and again.get("plotly_chart")
    assert not any("Found for a different setup" in w.value for w in again.warning)
    number(again, "Batch size").set_value(4).run()
    assert any("Found for a different setup" in w.value and "batch size" in w.value for w in again.warning)


def test_an_old_session_file_loads_with_the_new_fields_filled_in(isolated_dirs, tiny_folders):
    """A setup saved by the version before schedules: no schedule, freeze_epochs, lr_spread,
    pct_start or micro_batch, a field since removed, and a value outside its input's bounds."""
    sid = "An-old-setup-0000000000"[:22]
    old_cfg = {"epochs": 3, "batch_size": 16, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "optimizer": "adam",
               "scheduler": "cosine", "step_size": 7, "gamma": 0.1, "label_smoothing": 0.0, "seed": 0, "amp": "auto",
               "fast": True, "feature_views": 1, "cache_mb": 1024, "feature_cache": True, "removed_field": 1,
               "lr_spread": "lots"}
    path = isolated_dirs / "data" / "sessions" / f"{owner_of_key(sid)}.json"
    path.parent.mkdir(parents=True)
    write_json(path, {S.DATA_SOURCE: "folder", S.FOLDER_PATH: str(tiny_folders), S.ARCH: "mobilenet_v3_small",
                      S.WEIGHTS: "none", S.FREEZE: "none", S.TRAIN_CFG: old_cfg, S.JOB_ID: "gone"})
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["sid"] = sid
    at.switch_page("pages/train.py").run()
    assert not at.exception and not at.error
    cfg = at.session_state[S.TRAIN_CFG]
    assert (cfg["epochs"], cfg["optimizer"], cfg["scheduler"], cfg["lr"]) == (3, "adam", "cosine", 0.01)  # kept
    assert (cfg["schedule"], cfg["freeze_epochs"], cfg["lr_spread"], cfg["micro_batch"]) == ("fine_tune", 1, 100.0, 0)
    assert "removed_field" not in cfg
    assert at.selectbox(key="_w.train_cfg.schedule").value == "fine_tune"
    assert at.session_state[S.LR_FIND] is None


def test_compare_shows_each_runs_schedule_and_phases(app, tiny_split, isolated_dirs):
    from core.training.experiment import ExperimentConfig, run_experiment
    from core.training.trainer import TrainConfig
    runs = isolated_dirs / "runs"
    cfg = ExperimentConfig(data=str(tiny_split), arch="mobilenet_v3_small", weights="none", freeze="none", name="tuned",
                           train=TrainConfig(epochs=2, batch_size=8, schedule="fine_tune", optimizer="adam", lr=0.002),
                           owner=owner_of_key(VISITOR))
    run_experiment(cfg, runs_dir=runs)
    for name, drop in (("old", ("schedule_text",)), ("older", ("schedule_text", "train"))):
        d = make_run(tiny_split, runs, name)
        config = read_json(d / "config.json")
        for key in drop:
            config.pop(key)
        if "train" in config:  # as saved before schedules existed
            for key in ("schedule", "freeze_epochs", "lr_spread", "pct_start", "micro_batch"):
                config["train"].pop(key)
        write_json(d / "config.json", config)
    at = app("pages/compare.py")
    assert not at.exception
    table = at.dataframe[0].value.set_index("run")
    assert table.loc["tuned", "schedule"].startswith("fine_tune: 1 head-only epoch, then 1 unfrozen")
    assert table.loc["old", "schedule"] == "StepLR ×0.1 every 7" and table.loc["older", "schedule"] == "—"
    assert table.loc["tuned", "optimizer"] == "Adam 2e-03" and table.loc["older", "optimizer"] == "—"
    assert all(0 <= a <= 100 for a in table["best val acc"])  # percent, shown as 95.4%
    next(s for s in at.selectbox if s.label == "A closer look at").set_value(str(runs / "tuned")).run()
    assert not at.exception
    phases = at.dataframe[1].value
    assert phases["phase"].tolist() == ["frozen", "unfrozen"] and phases["path"].tolist() == ["cached features", "images through the network"]
    assert json.dumps(phases["rates toward the input"].tolist()) == json.dumps(["one rate", "÷100"])


def test_a_partial_freeze_at_the_tutorials_rate_is_offered_the_fine_tune_recipe(app, tiny_folders, isolated_dirs):
    """The walk's trap: five stages frozen, fine_tune at 0.001 (typed: fine_tune's own rate is
    the recipe's now), the head at chance after its epoch.  The Train page says so and one
    click sets the measured recipe."""
    from core.training.schedules import FINE_TUNE_RECIPE
    typed = {S.TRAIN_CFG: {**S.SETUP_DEFAULTS[S.TRAIN_CFG], "lr": 0.001}, S.TRAIN_EDITED: ["lr"]}
    at = app("pages/train.py", tiny_state(tiny_folders, **{S.WEIGHTS: "imagenet", S.ARCH: "mobilenet_v2", S.FREEZE: 5},
                                          **typed))
    assert not at.exception
    assert any("near chance" in i.value for i in at.info)
    next(b for b in at.button if b.label == "Use the fine-tune recipe").click().run()
    cfg = at.session_state[S.TRAIN_CFG]
    assert all(cfg[k] == v for k, v in FINE_TUNE_RECIPE.items())
    assert number(at, "Learning rate").value == FINE_TUNE_RECIPE["lr"]
    assert not any("near chance" in i.value for i in at.info)
    assert at.session_state[S.TRAIN_EDITED] == []  # the rate follows the schedule again


def test_choosing_fine_tune_brings_the_recipes_rates_and_a_typed_rate_wins(app, tiny_folders, isolated_dirs):
    """As on the CLI: fine_tune's rates are its recipe's (the tutorial's 0.001 left the head
    near chance), the standard schedule's the tutorial's, and a rate the user typed stays
    through schedule changes and a refresh."""
    from core.training.schedules import FINE_TUNE_RECIPE
    from ui.lr_finder import lr_text
    at = app("pages/train.py", tiny_state(tiny_folders, **{S.FREEZE: "none"}))
    schedule = at.selectbox(key="_w.train_cfg.schedule")
    assert schedule.value == "fine_tune" and number(at, "Learning rate").value == FINE_TUNE_RECIPE["lr"]
    assert f"fine_tune brings its measured recipe's learning rate {lr_text(FINE_TUNE_RECIPE['lr'])}" in captions(at)
    schedule.set_value("standard").run()
    assert number(at, "Learning rate").value == 0.001 and at.session_state[S.TRAIN_CFG]["unfreeze_div"] == 2.0
    number(at, "Learning rate").set_value(0.01).run()
    at.selectbox(key="_w.train_cfg.schedule").set_value("fine_tune").run()
    assert not at.exception
    cfg = at.session_state[S.TRAIN_CFG]
    assert (cfg["lr"], cfg["unfreeze_div"]) == (0.01, FINE_TUNE_RECIPE["unfreeze_div"])  # typed: kept; the rest: recipe's
    assert f"Yours, kept whatever the schedule: learning rate {lr_text(0.01)}" in captions(at)
    saved = read_json(isolated_dirs / "data" / "sessions" / f"{owner_of_key(VISITOR)}.json")
    assert saved[S.TRAIN_EDITED] == ["lr"] and saved[S.TRAIN_CFG]["lr"] == 0.01


def test_compare_says_when_the_best_epoch_is_a_head_only_one(app, tiny_split, isolated_dirs):
    """A fine_tune whose unfrozen epochs lost accuracy keeps its head-only epoch: the saved
    "fine-tuned" model is the frozen one, and Compare says so (ants/bees at the old recipe:
    0.967 head-only, then 0.967 and 0.895 unfrozen).  Runs without the caption's case say nothing."""
    from core.training.experiment import ExperimentConfig, run_experiment
    from core.training.trainer import TrainConfig
    runs = isolated_dirs / "runs"
    for name, accs in (("kept-head", [0.967, 0.967, 0.895]), ("improved", [0.9, 0.95, 0.96])):
        cfg = ExperimentConfig(data=str(tiny_split), arch="mobilenet_v3_small", weights="none", freeze="none", name=name,
                               train=TrainConfig(epochs=3, batch_size=8, schedule="fine_tune"), owner=owner_of_key(VISITOR))
        run_dir, _, _ = run_experiment(cfg, runs_dir=runs)
        history = [{**h, "val_acc": a} for h, a in zip(read_json(run_dir / "history.json"), accs)]
        assert [h["phase"] for h in history] == ["frozen", "unfrozen", "unfrozen"]
        best = max(range(3), key=lambda i: (accs[i], -i))
        write_json(run_dir / "history.json", history)
        write_json(run_dir / "summary.json", {**read_json(run_dir / "summary.json"), "best_epoch": best + 1,
                                               "best_val_acc": accs[best], "last_val_acc": accs[-1]})
    at = app("pages/compare.py", {S.SELECTED_RUNS: [str(runs / "kept-head"), str(runs / "improved")]})
    assert not at.exception
    table = at.dataframe[0].value.set_index("run")
    assert (table.loc["kept-head", "best val acc"], table.loc["kept-head", "last val acc"]) == (96.7, 89.5)
    at.selectbox(key="_w.compare_focus").set_value(str(runs / "kept-head")).run()
    assert "the best epoch (1, 96.7%) was a head-only one: the unfrozen epochs did not improve on it" in captions(at).lower()
    at.selectbox(key="_w.compare_focus").set_value(str(runs / "improved")).run()
    assert not at.exception and "head-only one" not in captions(at)


def test_the_default_head_only_setup_runs_one_cycle_and_says_so(app, tiny_folders, isolated_dirs):
    # The dashboard's default: the body frozen, fine_tune with nothing to unfreeze.  The head
    # trains under one-cycle (schedules.plan), so the Scheduler input is not the one used.
    at = app("pages/train.py", tiny_state(tiny_folders))
    assert at.session_state[S.FREEZE] == "backbone" and at.session_state[S.TRAIN_CFG]["schedule"] == "fine_tune"
    shown = at.selectbox(key="_scheduler_of_schedule")
    assert shown.disabled and shown.value == "onecycle"  # what runs, not the standard schedule's "step"
    assert "the head trains alone for all 5 epochs, under one-cycle" in captions(at)
    at.selectbox(key="_w.train_cfg.schedule").set_value("standard").run()
    assert not at.selectbox(key="_w.train_cfg.scheduler").disabled
    assert at.selectbox(key="_w.train_cfg.scheduler").value == "step"  # the stored choice, back in view
