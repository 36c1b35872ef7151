from pathlib import Path

import pytest
import yaml

from longtail.config import Config, config_from_dict, config_keys, config_to_dict, load_config, save_config
from longtail.errors import ConfigError


def test_defaults_are_the_demo_recipe():
    config = load_config()
    assert config.data.name == "fashion_mnist_lt"
    assert (config.data.n_max, config.data.imbalance_factor, config.data.profile) == (1000, 100.0, "exp")
    assert config.train.sampler == "instance"
    assert config.decouple.sampler == "class_aware" and config.decouple.class_aware.num_samples_cls == 4
    assert (config.decouple.crt.epochs, config.decouple.crt.lr, config.decouple.crt.batch_size) == (10, 0.2, "auto")
    assert (config.decouple.tau.min, config.decouple.tau.max, config.decouple.tau.steps) == (0.0, 2.0, 21)


def test_yaml_then_overrides(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\ntrain:\n  epochs: 7\n  lr: 1e-3\ndata:\n  root: /data/fm\n")
    config = load_config(path, ["train.epochs=9", "data.hflip=false", "decouple.crt.lr=0.5"])
    assert config.seed == 3
    assert config.train.epochs == 9  # override wins over the file
    assert config.train.lr == pytest.approx(1e-3)  # YAML reads 1e-3 as a string; it is still a float
    assert config.data.root == "/data/fm"
    assert config.data.hflip is False
    assert config.decouple.crt.lr == 0.5
    assert isinstance(config.train.epochs, int)


def test_one_override_as_a_string_is_one_override_not_its_characters():
    """``load_config(path, "train.epochs=5")`` was refused as "override 't': expected key=value"."""
    assert load_config(None, "train.epochs=5").train.epochs == 5
    assert load_config(None, ("train.epochs=5",)).train.epochs == 5


def test_unknown_key_names_the_close_match():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.epoch'.*'train\.epochs'"):
        load_config(None, ["train.epoch=3"])


def test_unknown_key_in_yaml(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  backbon: resnet8\n")
    with pytest.raises(ConfigError, match=r"model\.backbon.*model\.backbone"):
        load_config(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=abc", r"train\.epochs='abc': expected int"),
        ("train.epochs=2.5", r"train\.epochs=.*expected int"),
        ("data.profile=linear", r"data\.profile='linear': expected 'exp' \| 'step'"),
        ("train.epochs=0", r"train\.epochs=0: expected an integer in \[1, 100,000\]"),
        ("data.imbalance_factor=0.5", r"data\.imbalance_factor=0\.5: expected a number >= 1"),
        ("decouple.tau.min=-1", r"decouple\.tau\.min=-1\.0: expected a number >= 0"),
        ("train.sampler=uniform", r"train\.sampler='uniform'"),
        ("eval.few=200", r"eval\.many=100: expected an integer >= eval\.few"),
        ("device=tpu", r"device='tpu'"),
        ("device=cuda:x", r"device='cuda:x': expected auto, cpu, cuda or cuda:N"),
        ("device=cuda:-1", r"device='cuda:-1': expected auto, cpu, cuda or cuda:N"),
        ("device=0", r"device='0': expected auto, cpu, cuda or cuda:N"),
        ("train=3", r"train: is a section, not a key; set one of its keys, e.g. train\.epochs=\.\.\."),
        ("notakey", r"expected key=value"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_unknown_key_in_another_case_names_the_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'TRAIN\.Epochs'; did you mean 'train\.epochs'\?"):
        load_config(None, ["TRAIN.Epochs=3"])


def test_one_number_is_a_list_of_one():
    # eval.shift=10,50 was a list and eval.shift=10 "expected a list of float": YAML read the one number as 10
    assert load_config(None, ["eval.shift=10"]).eval.shift == [10.0]
    assert load_config(None, ["eval.shift=2.5"]).eval.shift == [2.5]
    assert load_config(None, ["eval.shift=10,50"]).eval.shift == [10.0, 50.0]
    with pytest.raises(ConfigError, match=r"eval\.shift\[0\]='yes': expected float; YAML 1\.1 reads yes as the bool"):
        load_config(None, ["eval.shift=yes"])


@pytest.mark.parametrize("raw", ["2024", "yes", "no", "1e3", "0x10", "1_000", "1:30", "2001-01-01", ".inf", "true"])
def test_text_keys_keep_what_yaml_reads_as_another_type(raw: str):
    # data.root=2024 (a directory named 2024) was "expected str or null", data.root=yes the same for True
    config = load_config(None, [f"data.root={raw}", f"data.filelist.train_list={raw}"])
    assert config.data.root == raw and config.data.filelist.train_list == raw
    assert load_config(None, ["data.root=null"]).data.root is None


@pytest.mark.parametrize(
    ("raw", "reading"),
    [
        ("1:30", "the base-60 number 90"),
        ("-1:30", "the base-60 number -90"),
        ("017", "the octal number 15"),
        ("0b101", "the binary number 5"),
        ("1_000", "1000"),
        ("yes", "the bool true"),
        ("off", "the bool false"),
    ],
)
def test_yaml_1_1_numbers_are_refused_for_number_keys(tmp_path: Path, raw: str, reading: str):
    # seed=1:30 was read as 90, 017 as 15, 1_000 as 1000 and 0b101 as 5, silently (PyYAML reads YAML 1.1)
    expected = rf"seed='{raw}': expected int; YAML 1\.1 reads {raw} as {reading}"
    with pytest.raises(ConfigError, match=expected):
        load_config(None, [f"seed={raw}"])
    path = tmp_path / "c.yaml"
    path.write_text(f"seed: {raw}\n")
    with pytest.raises(ConfigError, match=expected):  # the file and the command line read a value alike
        load_config(path)
    with pytest.raises(ConfigError, match=rf"train\.lr='{raw}': expected float; YAML 1\.1 reads"):
        load_config(None, [f"train.lr={raw}"])
    with pytest.raises(ConfigError, match=rf"eval\.shift\[1\]='{raw}': expected float; YAML 1\.1"):
        load_config(None, [f"eval.shift=10,{raw}"])  # an item of a list, split from the command line


def test_yaml_1_1_forms_are_text_for_text_keys_and_bools_for_bool_keys(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  root: 1:30\n  hflip: off\ntrain:\n  lr: 1:30.5\n")
    with pytest.raises(
        ConfigError, match=r"train\.lr='1:30\.5': expected float; YAML 1\.1 reads 1:30\.5 as the base-60"
    ):
        load_config(path)
    path.write_text("data:\n  root: 1:30\n  hflip: off\n")
    config = load_config(path)
    assert config.data.root == "1:30" and type(config.data.root) is str  # a plain str, saved as such
    assert config.data.hflip is False
    assert load_config(None, ["data.hflip=on"]).data.hflip is True
    # the same in YAML 1.1 and 1.2: read as before
    assert load_config(None, ["seed=0x1F"]).seed == 31 and load_config(None, ["train.lr=1.5e-3"]).train.lr == 1.5e-3
    with pytest.raises(ConfigError, match=r"seed='0o17': expected int; 0o17 is octal only in YAML 1\.2"):
        load_config(None, ["seed=0o17"])
    with pytest.raises(ConfigError, match=r"decouple\.bn='off': expected 'eval' \| 'train'"):
        load_config(None, ["decouple.bn=off"])


def test_home_is_expanded_in_where_the_data_lives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    # The shell leaves the ~ of data.root=~/x as typed; no reader expanded it ("~/x: directory not found").
    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config(None, ["data.root=~/fm", "data.path=~/f.npz"])
    assert (config.data.root, config.data.path) == (str(tmp_path / "fm"), str(tmp_path / "f.npz"))
    # An unknown user stays as typed (Path.expanduser raised RuntimeError: a traceback), the backbone's too.
    config = load_config(None, ["data.root=~nosuchuser1/x", "model.backbone=export:~nosuchuser1/m.pt2"])
    assert config.data.root == "~nosuchuser1/x" and config.model.backbone.endswith("/~nosuchuser1/m.pt2")


def test_missing_or_malformed_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


def test_saved_config_reloads_identically(tmp_path: Path):
    config = load_config(None, ["seed=5", "data.root=/x", "decouple.lws.weight_decay=5e-4"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text())) == config
    assert config_from_dict(config_to_dict(Config())) == Config()


def test_config_keys_lists_leaves():
    keys = config_keys()
    assert "train.lr" in keys and "decouple.crt.epochs" in keys and "seed" in keys
    assert "train" not in keys


def test_every_key_has_help_and_the_docs_list_them_all():
    from longtail.config import config_reference
    from longtail.config.reference import reference_markdown

    rows = config_reference()
    assert all(help_text for _, _, help_text in rows)
    reference = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    for key, _, _ in rows:
        assert f"`{key}`" in reference, f"docs/configuration.md lacks {key}; regenerate it with `make docs`"
    assert reference_markdown() in reference, (
        "docs/configuration.md: its reference is stale; regenerate it with `make docs` "
        "(or python scripts/update_config_docs.py; `make test` and `make demo` run it first)"
    )


def test_shipped_configs_load():
    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)
    # The demo recipe spelled out is exactly the defaults.
    assert load_config(configs[0].parent / "fashion_mnist_lt.yaml") == Config()


def test_keys_renamed_into_sections_still_load(tmp_path: Path):
    """A config file or run directory of an older version, with the keys as they were before each component
    had its own section, loads into the new keys (said once in the log)."""
    old = tmp_path / "old.yaml"
    old.write_text(
        "data: {train_list: a.txt, test_list: b.txt}\n"
        "train: {loss: ldam_drw, cb_beta: 0.99, ldam_scale: 16.0, focal_gamma: 1.0, la_tau: 0.5, sampler_q: 0.3}\n"
        "decouple: {num_samples_cls: 2, ncm_metric: l2, sampler_q: 0.7}\n"
    )
    config = load_config(old)
    t, d = config.train, config.decouple
    assert config.data.filelist.train_list == "a.txt" and config.data.filelist.test_list == "b.txt"
    assert t.ldam_drw.beta == t.class_balanced.beta == 0.99 and t.ldam_drw.scale == 16.0
    assert (t.focal.gamma, t.logit_adjusted.tau, t.power.q) == (1.0, 0.5, 0.3)
    assert (d.class_aware.num_samples_cls, d.ncm.metric, d.power.q) == (2, "l2", 0.7)
    assert load_config(None, ["train.focal_gamma=3"]).train.focal.gamma == 3.0  # on the command line too
    with pytest.raises(ConfigError, match="train.focal_gamma and train.focal.gamma: the same key"):
        load_config(None, ["train.focal_gamma=3", "train.focal.gamma=2"])


def test_an_override_replaces_a_renamed_key_of_the_file(tmp_path: Path):
    """An older config file (or run directory's config.yaml) under an old key name, overridden on the command
    line under the new name or the old one: the override wins, as any override does. It used to be refused as
    "the same key under its old and new name", so `longtail decouple OLD_RUN decouple.ncm.metric=l2` could not
    run."""
    old = tmp_path / "old.yaml"
    old.write_text("train: {loss: focal, focal_gamma: 1.0}\ndecouple: {ncm_metric: l2}\n")
    assert load_config(old, ["train.focal.gamma=3"]).train.focal.gamma == 3.0
    assert load_config(old, ["train.focal_gamma=4"]).train.focal.gamma == 4.0
    assert load_config(old, ["decouple.ncm.metric=cosine"]).decouple.ncm.metric == "cosine"
    new = tmp_path / "new.yaml"
    new.write_text("train: {loss: focal, focal: {gamma: 1.0}}\n")
    assert load_config(new, ["train.focal_gamma=5"]).train.focal.gamma == 5.0


def test_views_with_online_features_are_refused():
    """decouple.views caches augmented views for features=cached; with features=online they were ignored."""
    with pytest.raises(ConfigError, match=r"decouple\.views=2: expected 0 with decouple\.features=online"):
        load_config(None, ["decouple.views=2", "decouple.features=online"])
    assert load_config(None, ["decouple.views=2"]).decouple.views == 2
