"""The experiment's method table (core.methods): consistent with the trainers, the scales and the
results that read it."""

from __future__ import annotations

import dataclasses

from core import methods, results
from core.scales import SCALES, Scale, budget, continued_budget
from core.train.config import METHODS as TRAIN_METHODS
from core.train.config import method as train_method


def test_names_and_labels_are_unique_and_every_trainer_takes_its_data():
    names = [m.name for m in methods.METHODS]
    labels = [m.label for m in methods.METHODS]
    assert len(set(names)) == len(names) and len(set(labels)) == len(labels)
    scale_fields = {f.name for f in dataclasses.fields(Scale)}
    for m in methods.METHODS:
        assert m.trainer in TRAIN_METHODS, m
        assert m.spec in train_method(m.trainer).sources, m  # the trainer reads this kind of data
        assert m.budget in scale_fields, m
        assert m.ref == train_method(m.trainer).preference, m  # DPO runs against the SFT-weak model
        assert bool(m.no_data) == m.strong, m  # only a method on exploration data can come out empty
        assert m.start in ("weak", "strong") or methods.BY_NAME[m.start] in methods.BASELINES, m
        for baseline in (*m.claims, *m.controls):
            assert baseline in methods.BY_NAME and not methods.BY_NAME[baseline].strong


def test_the_views_are_the_tables_the_results_always_had():
    assert results.METHODS == (("SFT-weak", "sft-weak"), ("SFT-strong", "sft-strong"),
                               ("SFT-continued", "sft-continued"), ("W2S-SFT", "w2s-sft"),
                               ("ETO-DPO", "eto-dpo"), ("TreeDPO", "treedpo"), ("MCTS", "mcts"))
    assert results.STRONG_METHODS == ("W2S-SFT", "ETO-DPO", "TreeDPO", "MCTS")
    assert results.CLAIMS == (("TreeDPO", "SFT-weak"), ("TreeDPO", "SFT-strong"), ("MCTS", "SFT-weak"),
                              ("MCTS", "SFT-strong"), ("TreeDPO", "SFT-continued"), ("MCTS", "SFT-continued"))
    # the pipeline starts the longest trainings first
    assert [m.name for m in methods.training_order()] == ["TreeDPO", "ETO-DPO", "MCTS", "W2S-SFT"]
    assert [m.label for m in methods.figure_methods()] == ["sft-weak", "sft-strong", "treedpo", "mcts"]


def test_a_method_found_by_name_or_label_and_its_scale_settings():
    assert methods.find("TreeDPO") is methods.find("treedpo") is methods.find("TREEDPO") is methods.BY_NAME["TreeDPO"]
    assert methods.find("SFT strong") is None  # no guessing: the name or the label
    tiny, quick = SCALES["tiny"], SCALES["quick"]
    assert budget(tiny, methods.BY_NAME["TreeDPO"]) == tiny.dpo == budget(tiny, methods.BY_NAME["ETO-DPO"])
    assert budget(tiny, methods.BY_NAME["MCTS"]) == tiny.mcts_sft
    assert budget(tiny, methods.BY_NAME["SFT-continued"]) == tiny.continued
    assert budget(quick, methods.BY_NAME["SFT-continued"]) == continued_budget(quick) == {
        "epochs": 1.0, "lr": 5e-5, "batch_size": 4}  # quick has none of its own: the DPO stage's
