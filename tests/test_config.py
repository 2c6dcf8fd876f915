import pytest

from pipeline.config import ConfigError, load_config, parse_override


def test_defaults_load_and_method_defaults_are_filled():
    config = load_config(None, ["method.name=self_training"])
    assert config.method["name"] == "self_training"
    assert config.method["self_training"]["rounds"] >= 1


@pytest.mark.parametrize("override, named", [
    ("train.stepz=3", "train.stepz"),
    ("bogus.x=1", "bogus"),
    ("method.self_training.roundz=2", "method.self_training.roundz"),
    ("method.not_a_method.x=1", "method.not_a_method"),
])
def test_unknown_keys_are_rejected_by_name(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(None, [override])


def test_wrong_types_are_rejected_by_name():
    with pytest.raises(ConfigError, match=r"train\.steps.*int"):
        load_config(None, ['train.steps="many"'])
    with pytest.raises(ConfigError, match=r"preprocess\.spatial_size"):
        load_config(None, ["preprocess.spatial_size=28"])


@pytest.mark.parametrize("override, named", [
    ("preprocess.spatial_size=[]", r"preprocess\.spatial_size.*\[\]"),
    ("preprocess.spatial_size=[28, 0]", r"preprocess\.spatial_size"),
    ("preprocess.spatial_size=[8, 8, 8, 8]", r"preprocess\.spatial_size"),
    ("train.batch_size=0", r"train\.batch_size"),
    ("train.unlabelled_batch_size=-1", r"train\.unlabelled_batch_size"),
])
def test_sizes_that_cannot_train_are_rejected_by_name(override, named):
    with pytest.raises(ConfigError, match=named):
        load_config(None, [override])


@pytest.mark.parametrize("value", ["1.0", "-0.1"])
def test_a_precision_confidence_outside_0_to_1_is_rejected_by_name(value):
    with pytest.raises(ConfigError, match=r"calibrate\.precision_confidence"):
        load_config(None, [f"calibrate.precision_confidence={value}"])
    assert load_config(None, ["calibrate.precision_confidence=0"]).calibrate.precision_confidence == 0


def test_unknown_method_name_lists_known_methods():
    with pytest.raises(ConfigError, match="supervised"):
        load_config(None, ["method.name=magic"])


def test_config_file_with_unknown_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[train]\nsteps = 10\nlearning_rate = 0.1\n')
    with pytest.raises(ConfigError, match=r"train\.learning_rate"):
        load_config(path)


def test_config_file_that_is_not_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train\nsteps = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_overrides_parse_toml_values_and_fall_back_to_strings():
    assert parse_override("train.lr=0.01") == (["train", "lr"], 0.01)
    assert parse_override("method.name=fixmatch") == (["method", "name"], "fixmatch")
    assert parse_override("preprocess.spatial_size=[16, 16]") == (["preprocess", "spatial_size"], [16, 16])
    with pytest.raises(ConfigError):
        parse_override("train.lr")


def test_switching_method_keeps_other_method_tables_valid(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[method]\nname = "self_training"\n[method.self_training]\nrounds = 3\n')
    config = load_config(path, ["method.name=supervised"])
    assert config.method["name"] == "supervised"
    assert config.method["self_training"]["rounds"] == 3


def test_shipped_configs_are_valid():
    from pathlib import Path

    configs = sorted(Path(__file__).parent.parent.glob("configs/*.toml"))
    assert configs
    for path in configs:
        load_config(path)


PER_METHOD = """
[train]
steps = 100
lr = 0.003
[per_method.ladder.train]
minutes = 2.0
lr = 0.002
[per_method.ladder.method.ladder]
noise = 0.2
"""


def test_per_method_settings_apply_to_their_method_only(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(PER_METHOD)
    ladder = load_config(path, ["method.name=ladder"])
    assert (ladder.train.minutes, ladder.train.lr, ladder.train.steps) == (2.0, 0.002, 100)
    assert ladder.method["ladder"]["noise"] == 0.2
    other = load_config(path, ["method.name=fixmatch"])
    assert (other.train.minutes, other.train.lr) == (0.0, 0.003)
    # The command line wins over the file's per-method table.
    assert load_config(path, ["method.name=ladder", "train.lr=0.01"]).train.lr == 0.01


@pytest.mark.parametrize("extra, named", [
    ("[per_method.magic.train]\nsteps = 1\n", "magic"),
    ("[per_method.fixmatch.train]\nstepz = 1\n", r"per_method\.fixmatch.*train\.stepz"),
    ("[per_method.fixmatch.method.fixmatch]\nthreshhold = 0.9\n", r"per_method\.fixmatch.*threshhold"),
])
def test_per_method_tables_are_checked_even_when_not_chosen(tmp_path, extra, named):
    path = tmp_path / "c.toml"
    path.write_text(PER_METHOD + extra)
    with pytest.raises(ConfigError, match=named):
        load_config(path, ["method.name=supervised"])


def test_overrides_on_the_command_line_are_read_wherever_they_stand():
    from pipeline.cli import build_parser, parse_arguments

    parser = build_parser()
    args = parse_arguments(parser, ["run", "--scans", "S", "train.minutes=1", "--seed", "3", "--quiet",
                                    "method.name=supervised", "--positive", "x", "network.channels=[8, 16]",
                                    "train.minutes=2"])
    assert args.overrides == ["train.minutes=1", "method.name=supervised", "network.channels=[8, 16]",
                              "train.minutes=2"]  # in the order typed: the last value wins
    assert (args.seed, args.quiet, args.positive) == (3, True, "x")
    with pytest.raises(SystemExit):  # anything else unknown is still refused
        parse_arguments(parser, ["run", "--scans", "S", "a.b=1", "--quiet", "stray"])
    with pytest.raises(SystemExit):  # a command without overrides takes none
        parse_arguments(parser, ["suggest", "RUN", "--n", "3", "a.b=1"])
