"""Typed settings (core.settings): the CLI's flags generated from their fields, the settings built
back from the flags, their one check, a stored tree's settings read back, and tree ids."""

from __future__ import annotations

import dataclasses

import pytest

from core.cli import build_parser, main
from core.cli.fields import from_args
from core.errors import UserError
from core.settings import ExploreSettings, GrowSettings, MCTSSettings, PairSettings, TreeSettings
from core.stages import grow_trees
from core.trajectory import Step, Trajectory, tree_id

VERBS = [(["tree"], TreeSettings), (["mcts"], MCTSSettings), (["pairs"], PairSettings),
         (["explore", "--env", "shop", "--task", "t", "--node", "0", "--policy", "random"], ExploreSettings),
         (["grow", "--env", "shop", "--policy", "random", "--budget", "8"], GrowSettings)]


@pytest.mark.parametrize("argv, cls", VERBS, ids=[v[0][0] for v in VERBS])
def test_every_field_is_a_flag_with_help_and_the_default_back(argv, cls) -> None:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[argv[0]]
    options = {a.dest: a for a in sub._actions}
    for f in dataclasses.fields(cls):
        assert f.name in options and f.metadata["help"] in options[f.name].help, f.name
    built = from_args(cls, parser.parse_args(argv))
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    assert dataclasses.asdict(built) == {**defaults, **({"budget": 8} if cls is GrowSettings else {})}


def test_flags_build_the_settings_and_bad_values_are_refused_by_argparse(capsys) -> None:
    args = build_parser().parse_args(["mcts", "--iterations", "5", "--c", "0.5", "--rule", "puct"])
    assert from_args(MCTSSettings, args) == MCTSSettings(iterations=5, c=0.5, rule="puct")
    args = build_parser().parse_args(["pairs", "--granularity", "trajectory", "--min-margin", "0.25",
                                      "--baseline", "weak"])
    assert from_args(PairSettings, args) == PairSettings("trajectory", "data", 0.25, "weak")
    for argv in (["mcts", "--iterations", "0"], ["grow", "--env", "shop", "--policy", "random", "--budget", "8",
                                                  "-k", "0"], ["tree", "--merge", "fuzzy"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert "argument --iterations: 0 is outside 1.." in err and "argument -k/--k: 0 is outside 1.." in err


@pytest.mark.parametrize("settings, needle", [
    (MCTSSettings(iterations=0), "--iterations must be at least 1, got 0"),
    (MCTSSettings(iterations=-3), "--iterations must be at least 1, got -3"),
    (GrowSettings(budget=8, per_tree=0), "--per-tree must be at least 1, got 0"),
    (ExploreSettings(max_steps=0), "--max-steps must be at least 1, got 0"),
    (ExploreSettings(seed=-1), "--seed must be at least 0, got -1"),
    (PairSettings(value="q"), "unknown pair value 'q'; use one of data, mcts"),
])
def test_one_check_per_field(settings, needle) -> None:
    with pytest.raises(UserError, match=needle):
        settings.check()
    ExploreSettings(max_steps=None).check()  # None: the env's own limit


def test_a_stored_trees_settings_read_back_with_the_defaults() -> None:
    assert MCTSSettings.of_tree(None) == MCTSSettings()
    # the mean rule records 0 iterations: a rerun takes the default search length
    assert MCTSSettings.of_tree({"mcts": {"rule": "mean", "iterations": 0, "c": 2.0}}) == \
        MCTSSettings(1000, 2.0, "mean")
    assert MCTSSettings.of_tree({"mcts": {"rule": "puct", "iterations": 50}}) == MCTSSettings(50, 1.41, "puct")
    assert TreeSettings.of_tree("semantic", {"threshold": 0.8}) == TreeSettings("semantic", 0.8)
    assert TreeSettings.of_tree(None, {}) == TreeSettings()


def test_the_pipelines_earlier_preset_flag_is_one_line(capsys) -> None:
    assert main(["pipeline", "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err == "w2stree: error: --preset is now called --scale; pass --scale tiny\n"
    assert "--preset" not in build_parser().parse_args(["pipeline"]).__dict__


def test_tree_ids_are_made_one_way() -> None:
    env = "shop?n_products=200&n_categories=10"
    assert tree_id(env, "train_3") == f"{env}/train_3"
    traj = Trajectory(env=env, task_id="train_3", instruction="i", steps=[Step("search[x]", "o")], reward=1.0)
    assert [t.tree_id for t in grow_trees([traj])] == [tree_id(env, "train_3")]
