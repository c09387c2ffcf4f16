"""Configuration: params.yaml, dotted overrides, and refusals that name the key."""
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from granular.config import Config, ConfigError, ImageView, apply_override, load_config
from granular.store.paths import ProjectPaths
from small_project import EVERY_KIND

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _values(raw: dict, prefix: str = "") -> dict[str, object]:
    """Every leaf value of a params mapping by its dotted key (a list is one value)."""
    found = {}
    for key, value in raw.items():
        if isinstance(value, dict) and value:
            found |= _values(value, f"{prefix}{key}.")
        else:
            found[f"{prefix}{key}"] = value
    return found


def test_shipped_params_load_into_a_typed_config_that_holds_each_value_as_written():
    written = _values(yaml.safe_load(PARAMS.read_text()))
    loaded = _values(load_config(PARAMS).as_dict())
    assert {key: loaded.get(key, "<missing>") for key in written} == written


def test_the_code_defaults_are_the_shipped_params():
    """params.yaml is the defaults written out: Config() resolves to exactly what it loads into,
    every view's training recipe included."""
    shipped, default = load_config(PARAMS), Config()
    assert default.model_dump() == shipped.model_dump()
    assert {name: default.train_config(view) for name, view in default.views.items()} == {
        name: shipped.train_config(view) for name, view in shipped.views.items()
    }


def test_a_short_params_file_gets_the_shipped_value_of_every_key_it_leaves_out(tmp_path):
    short = tmp_path / "short.yaml"
    short.write_text("distill: {epochs: 1}\nsplit: {seed: 3}\n")
    assert load_config(short) == load_config(PARAMS, ["distill.epochs=1", "split.seed=3"])


def test_view_names_are_level_dash_resolution():
    config = load_config(PARAMS)
    assert [v.name for v in config.views.values()] == list(config.views)
    assert list(config.views) == list(yaml.safe_load(PARAMS.read_text())["views"])
    assert list(load_config(PARAMS, [EVERY_KIND]).views) == ["fine-28", "fine-14", "coarse-28", "fine-14-clusters4"]
    assert ImageView(level="coarse", resolution=7).name == "coarse-7"


def test_a_segmented_view_is_named_by_its_segments_and_has_a_global_model():
    view = load_config(PARAMS, [EVERY_KIND]).view("fine-14-clusters4")
    assert (view.segments.by, view.segments.count) == ("clusters", 4)
    assert view.global_name == "fine-14"


def test_a_segmented_view_without_its_global_view_is_refused():
    with pytest.raises(ConfigError, match="view 'fine-28-clusters3' trains one expert per segment; its global model, view 'fine-28'"):
        load_config(PARAMS, [EVERY_KIND, "views={fine-28-clusters3: {level: fine, resolution: 28, segments: {count: 3}}}"])


def test_a_segmented_view_misnamed_is_refused_with_the_right_name():
    with pytest.raises(ConfigError, match="view 'fine-28-seg' must be named 'fine-28-clusters3'"):
        load_config(PARAMS, [EVERY_KIND, "views.fine-28-seg={level: fine, resolution: 28, segments: {count: 3}}"])


def test_a_specialist_is_named_by_its_classes_and_learns_fine_classes_beside_a_view_of_every_class():
    config = load_config(PARAMS, [EVERY_KIND, "views.fine-14-T-shirt_top-Shirt={level: fine, resolution: 14, classes: [T-shirt/top, Shirt]}"])
    assert config.specialists == {"fine-14-T-shirt_top-Shirt": ["T-shirt/top", "Shirt"]}
    refusals = {
        "views.fine-14-clusters4-tops={level: fine, resolution: 14, classes: [tops], segments: {count: 4}}":
            "a specialist is one network; it takes no segments",
        "views={fine-28-tops: {level: fine, resolution: 28, classes: [tops]}}": "every view is a specialist",
        "views.fine-28-x={level: fine, resolution: 28, classes: []}": "at least 1 item",
    }
    for override, message in refusals.items():
        with pytest.raises(ConfigError, match=message):
            load_config(PARAMS, [EVERY_KIND, override])


def test_cluster_features_must_divide_the_image():
    with pytest.raises(ConfigError, match="view fine-14-clusters4: segments.feature_resolution 5 does not divide"):
        load_config(PARAMS, [EVERY_KIND, "views.fine-14-clusters4.segments.feature_resolution=5"])


def test_a_stage_resolution_must_divide_the_views_and_is_for_images_only():
    stage = "{level: fine, epochs: 1, resolution: 7}"
    config = load_config(PARAMS, [EVERY_KIND, f"views.fine-14.train.stages=[{stage}]"])
    assert config.train_config(config.view("fine-14")).stages[0].resolution == 7
    with pytest.raises(ConfigError, match=r"view fine-14: train.stages\[0\].resolution 4 does not divide the view's resolution 14"):
        load_config(PARAMS, [EVERY_KIND, "views.fine-14.train.stages=[{level: fine, epochs: 1, resolution: 4}]"])
    table = [
        "data.source={format: csv, path: data/table.csv}", "data.table={target: label}", "taxonomy=null",
        "distill.enabled=false", f"views={{fine-all: {{level: fine, features: all, train: {{stages: [{stage}]}}}}}}",
    ]
    with pytest.raises(ConfigError, match=r"views.fine-all.train.stages\[0\].resolution: a table has no resolution"):
        load_config(PARAMS, table)


def test_dotted_overrides_replace_single_keys():
    config = load_config(PARAMS, [EVERY_KIND, "train.epochs=2", "data.limit=5000", "data.source.format=npz"])
    assert config.train.epochs == 2
    assert config.data.limit == 5000
    assert config.data.source.format == "npz"
    assert config.train.batch_size == load_config(PARAMS, [EVERY_KIND]).train.batch_size  # siblings untouched


def test_override_of_the_aliased_validate_section():
    config = load_config(PARAMS, [EVERY_KIND, "validate.min_per_class=5"])
    assert config.validate_.min_per_class == 5
    assert config.as_dict()["validate"]["min_per_class"] == 5


def test_views_are_overridden_with_yaml():
    config = load_config(PARAMS, [EVERY_KIND, "views={coarse-14: {level: coarse, resolution: 14}, fine-7: {level: fine, resolution: 7}}"])
    assert list(config.views) == ["coarse-14", "fine-7"]


def test_one_view_setting_is_overridden_by_its_dotted_key():
    config = load_config(PARAMS, [EVERY_KIND, "views.fine-28.train.epochs=2", "views.fine-14.train={}"])
    fine_28 = config.train_config(config.view("fine-28"))
    assert fine_28.epochs == 2 and fine_28.stages == load_config(PARAMS, [EVERY_KIND]).train_config(config.view("fine-28")).stages
    assert config.train_config(config.view("fine-14")).epochs == config.train.epochs  # no setting of its own


def test_override_value_null_clears_a_key():
    config = load_config(PARAMS, [EVERY_KIND, "data.limit=5000", "data.limit=null"])
    assert config.data.limit is None


@pytest.mark.parametrize("assignment", ["train.epochs", "=2"])
def test_override_without_key_or_equals_is_refused(assignment):
    with pytest.raises(ConfigError, match="is not of the form key=value"):
        load_config(PARAMS, [EVERY_KIND, assignment])


def test_override_below_a_value_that_is_not_a_section_is_refused():
    with pytest.raises(ConfigError, match=r"override 'train\.epochs\.x=1': 'epochs' is not a section"):
        load_config(PARAMS, [EVERY_KIND, "train.epochs.x=1"])


def test_unknown_key_is_rejected_with_its_path_where_it_was_set_and_the_nearest_key():
    with pytest.raises(ConfigError, match=r"^--set train\.epoch=2: train\.epoch: Extra inputs are not permitted "
                                          r"\(did you mean train\.epochs\?\)$"):
        load_config(PARAMS, [EVERY_KIND, "train.epoch=2"])
    with pytest.raises(ConfigError, match=r"--set views\.fine-28\.train\.epoch=2: .*did you mean views\.fine-28\.train\.epochs\?"):
        load_config(PARAMS, [EVERY_KIND, "views.fine-28.train.epoch=2"])


def test_unknown_section_is_rejected_with_its_path(tmp_path):
    with pytest.raises(ConfigError, match=r"^--set trian\.epochs=2: trian: Extra inputs are not permitted \(did you mean train\?\)"):
        load_config(PARAMS, [EVERY_KIND, "trian.epochs=2"])
    params = tmp_path / "params.yaml"
    params.write_text("trian: {epochs: 2}\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: trian: Extra inputs are not permitted"):
        load_config(params)


def test_bad_value_is_rejected_with_its_path():
    with pytest.raises(ConfigError, match=r"train\.epochs: Input should be greater than or equal to 1"):
        load_config(PARAMS, [EVERY_KIND, "train.epochs=0"])


def test_a_view_keyed_by_another_name_than_its_spec_is_rejected():
    with pytest.raises(ConfigError, match="view 'fine-28' must be named 'coarse-28'"):
        load_config(PARAMS, [EVERY_KIND, "views.fine-28.level=coarse"])


def test_no_views_is_rejected():
    with pytest.raises(ConfigError, match="at least one view is needed"):
        load_config(PARAMS, [EVERY_KIND, "views={}"])


def test_resolution_that_does_not_divide_the_image_is_rejected():
    with pytest.raises(ConfigError, match="view fine-5: resolution 5 does not divide the image shape 28x28"):
        load_config(PARAMS, [EVERY_KIND, "views={fine-5: {level: fine, resolution: 5}}"])


def test_changing_image_shape_rechecks_every_view():
    with pytest.raises(ConfigError, match="view fine-28: resolution 28 does not divide the image shape 32x32"):
        load_config(PARAMS, [EVERY_KIND, "validate.image_shape=[32, 32]"])


def test_missing_params_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no parameters file at .*absent.yaml"):
        load_config(tmp_path / "absent.yaml")


def test_params_file_must_hold_a_mapping(tmp_path):
    (tmp_path / "p.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping at the top level"):
        load_config(tmp_path / "p.yaml")


def test_empty_params_file_gives_the_defaults(tmp_path):
    (tmp_path / "p.yaml").write_text("")
    assert load_config(tmp_path / "p.yaml") == Config()


def test_apply_override_creates_missing_sections():
    raw = {}
    apply_override(raw, "fusion.strategy=product")
    assert raw == {"fusion": {"strategy": "product"}}


def test_a_view_overrides_the_shared_training_parameters_and_gets_its_own_seed(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "train: {epochs: 5, seed: 7}\n"
        "views:\n"
        "  fine-28: {level: fine, resolution: 28}\n"
        "  coarse-28: {level: coarse, resolution: 28, train: {epochs: 2}}\n"
        "  fine-14: {level: fine, resolution: 14, train: {seed: 1}}\n"
    )
    config = load_config(params)
    fine, coarse, low = (config.train_config(config.view(n)) for n in ("fine-28", "coarse-28", "fine-14"))
    assert (fine.epochs, coarse.epochs) == (5, 2)
    assert low.seed == 1
    assert len({fine.seed, coarse.seed}) == 2 and load_config(params).train_config(config.view("fine-28")) == fine


def test_a_bad_per_view_training_parameter_is_refused_with_the_view_named(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("views:\n  fine-28: {level: fine, resolution: 28, train: {epochs: 0}}\n")
    with pytest.raises(ConfigError, match="params.yaml: views.fine-28.train.epochs: Input should be greater than or equal to 1"):
        load_config(params)


def test_an_unknown_view_is_named_in_the_error():
    with pytest.raises(KeyError, match="no view named 'fine-7'"):
        load_config(PARAMS, [EVERY_KIND]).view("fine-7")


def test_extra_heads_are_for_image_views():
    config = load_config(PARAMS, [EVERY_KIND, "views.fine-28.train.heads={coarse: 0.5}"])
    assert config.train_config(config.view("fine-28")).heads == {"coarse": 0.5}
    table = [
        "data.source={format: csv, path: data/table.csv}", "data.table={target: label}", "taxonomy=null",
        "distill.enabled=false", "views={fine-all: {level: fine, features: all, train: {heads: {coarse: 1}}}}",
    ]
    with pytest.raises(ConfigError, match=r"views.fine-all.train.heads: extra heads are for image views"):
        load_config(PARAMS, table)


# coarse-14 is no view of the shipped params: a transfer of that name needs nothing else changed.
TRANSFER = "transfers={coarse-14: {start_from: fine-14, level: coarse, resolution: 14, train: {epochs: 2}}}"


def test_a_transfer_is_a_view_trained_after_its_source_and_stays_apart_in_the_dump():
    config = load_config(PARAMS, [EVERY_KIND, TRANSFER])
    assert list(config.views)[-1] == "coarse-14" and config.view("coarse-14").start_from == "fine-14"
    assert list(config.transfers) == ["coarse-14"]
    assert config.train_config(config.view("coarse-14")).epochs == 2
    dumped = config.as_dict()
    assert "coarse-14" not in dumped["views"] and dumped["transfers"]["coarse-14"]["start_from"] == "fine-14"
    assert Config.model_validate(dumped) == config
    assert list(config.with_views(["fine-14"]).transfers) == []
    stated = Config(
        views={"fine-28": {"level": "fine", "resolution": 28}, "fine-14": {"level": "fine", "resolution": 14}},
        transfers={"coarse-28": {"start_from": "fine-28", "level": "coarse", "resolution": 28}},
    )
    assert list(stated.views) == ["fine-28", "fine-14", "coarse-28"]  # after the views


@pytest.mark.parametrize(("overrides", "message"), [
    (["transfers={coarse-14: {level: coarse, resolution: 14}}"], r"transfers.coarse-14.start_from: name the view"),
    (["transfers={coarse-14: {start_from: fine-7, level: coarse, resolution: 14}}"],
     r"transfers.coarse-14.start_from: 'fine-7' is not a view declared before it"),
    (["transfers={coarse-14: {start_from: coarse-14, level: coarse, resolution: 14}}"],
     r"'coarse-14' is not a view declared before it"),
    (["transfers={coarse-14: {start_from: coarse-7, level: coarse, resolution: 14},"
      " coarse-7: {start_from: fine-14, level: coarse, resolution: 7}}"], r"'coarse-7' is not a view declared before it"),
    (["transfers={coarse-14: {start_from: fine-14-clusters4, level: coarse, resolution: 14}}"],
     r"view fine-14-clusters4 trains one expert per segment"),
    (["transfers={coarse-14: {start_from: fine-14, level: coarse, resolution: 14, train: {width: 48}}}"],
     r"train.width is 48 here but 32 in view fine-14: the network must have the same shape"),
    (["transfers={fine-14: {start_from: fine-28, level: fine, resolution: 14}}"],
     r"transfers.fine-14: a view of that name is declared already"),
    (["views.fine-14.start_from=fine-28"], r"views.fine-14.start_from: a view that starts from another is declared under `transfers:`"),
])
def test_a_transfer_without_a_fitting_source_declared_before_it_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PARAMS, [EVERY_KIND, *overrides])


PAIR = ["cotrained={fine-7: {level: fine, resolution: 7}, fine-4: {level: fine, resolution: 4}}",
        "cotrain={mutual: {first: fine-7, second: fine-4, weight: 0.5}}"]


def test_a_cotrained_pair_is_two_views_after_those_of_views_and_stays_apart_in_the_dump():
    config = load_config(PARAMS, [EVERY_KIND, *PAIR])
    assert list(config.views)[-2:] == ["fine-7", "fine-4"]
    assert config.pair_of("fine-4") == "mutual" and config.pair_of("fine-28") is None
    dumped = config.as_dict()
    assert "fine-7" not in dumped["views"] and set(dumped["cotrained"]) == {"fine-7", "fine-4"}
    assert Config.model_validate(dumped) == config
    assert config.with_views(["fine-28", "fine-7"]).cotrain == {}  # a pair without one of its views is gone


@pytest.mark.parametrize(("overrides", "message"), [
    ([PAIR[0]], r"cotrained: fine-7, fine-4 in no pair of `cotrain:`, so never trained"),
    ([PAIR[0], "cotrain={mutual: {first: fine-7, second: fine-28, weight: 0.5}}"],
     r"cotrain.mutual.second: 'fine-28' is not a view of `cotrained:`"),
    ([PAIR[0], "cotrain={a: {first: fine-7, second: fine-4, weight: 1}, b: {first: fine-4, second: fine-7, weight: 1}}"],
     r"cotrain.b.first: view fine-4 is co-trained in pair a already"),
    ([PAIR[0], "cotrain={mutual: {first: fine-7, second: fine-4, weight: -1}}"], r"cotrain.mutual.weight"),
    (["cotrained={fine-7: {level: fine, resolution: 7}, coarse-7: {level: coarse, resolution: 7}}",
      "cotrain={mutual: {first: fine-7, second: coarse-7, weight: 0.5}}"], r"cotrain.mutual: fine-7 and coarse-7 must learn the same level"),
    (["cotrained={fine-7: {level: fine, resolution: 7, train: {heads: {coarse: 1}}}, fine-4: {level: fine, resolution: 4}}",
      PAIR[1]], r"cotrained.fine-7: a co-trained view is one network trained in one stage"),
    (["cotrained={fine-28: {level: fine, resolution: 28}}"], r"cotrained.fine-28: a view of that name is declared already"),
])
def test_a_pair_that_cannot_train_together_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PARAMS, [EVERY_KIND, *overrides])


def test_a_segment_column_of_any_name_names_its_view_with_safe_characters():
    table = [
        "data.source={format: csv, path: data/table.csv}", "data.table={target: label}", "taxonomy=null",
        "distill.enabled=false",
    ]
    view = "{level: fine, features: all, segments: {by: column, column: 'Área Code'}}"
    with pytest.raises(ConfigError, match=r"must be named 'fine-all-Area_Code' after its spec"):
        load_config(PARAMS, table + [f"views={{fine-all: {{level: fine, features: all}}, fine-all-Área Code: {view}}}"])
    config = load_config(PARAMS, table + [f"views={{fine-all: {{level: fine, features: all}}, fine-all-Area_Code: {view}}}"])
    assert config.view("fine-all-Area_Code").segments.column == "Área Code"


@pytest.mark.parametrize(("setting", "taxonomy_text", "message"), [
    ("data.source.path=data/nowhere", None, r"data\.source\.path: data/nowhere does not exist"),
    ("taxonomy=data/none.yaml", None, r"taxonomy: data/none\.yaml is not a file"),
    ("taxonomy=data/bad.yaml", "levels: []\n", r"taxonomy: .*'levels' must be a non-empty list"),
])
def test_a_missing_data_source_or_a_bad_taxonomy_is_a_configuration_error_before_anything_starts(
    tmp_path, capsys, setting, taxonomy_text, message
):
    import time

    from flows.cli import main as granular_cli

    (tmp_path / "data").mkdir()
    if taxonomy_text is not None:
        (tmp_path / "data" / "bad.yaml").write_text(taxonomy_text)
    started = time.perf_counter()
    assert granular_cli(["run", "--root", str(tmp_path), "--params", str(PARAMS), "--set", setting]) == 2
    assert time.perf_counter() - started < 5  # no server was started (one takes 10 s and more)
    assert re.search(message, capsys.readouterr().err)


FASHION_TAXONOMY = (Path(__file__).parents[1] / "data" / "taxonomy.yaml").read_text()


@pytest.mark.parametrize(("taxonomy_text", "message"), [
    # Sandal left out: every class after it would take the next one's images, and label 9 has none.
    (FASHION_TAXONOMY.replace("  - {fine: Sandal, coarse: footwear}\n", ""),
     r"taxonomy data/taxonomy\.yaml does not fit the classes of /usr/share/datasets/fashion-mnist: "
     r"label 9 \(7000 examples\) has no class in it \(it has 9, ids 0\.\.8\)$"),
    (FASHION_TAXONOMY + "  - {fine: Hat, coarse: footwear}\n",
     r"taxonomy data/taxonomy\.yaml does not fit the classes of /usr/share/datasets/fashion-mnist: "
     r"class 10 \(Hat\) has no examples in the train split; class 10 \(Hat\) has no examples in the test split$"),
])
def test_a_taxonomy_that_does_not_fit_the_data_s_labels_is_a_configuration_error(tmp_path, capsys, taxonomy_text, message):
    import time

    from flows.cli import main as granular_cli

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "taxonomy.yaml").write_text(taxonomy_text)
    started = time.perf_counter()
    assert granular_cli(["run", "--root", str(tmp_path), "--params", str(PARAMS)]) == 2
    assert time.perf_counter() - started < 1  # the label files read, no server started
    assert re.search(r"configuration error: " + message, capsys.readouterr().err.strip())


def test_class_folders_are_checked_against_the_taxonomy_by_name(tmp_path):
    from granular.pipeline.preflight import check_inputs

    for folder in ("train/a", "train/b_c", "train/stray", "test/a"):
        (tmp_path / "pictures" / folder).mkdir(parents=True)
    (tmp_path / "taxonomy.yaml").write_text(
        "levels: [fine, coarse]\nclasses:\n  - {fine: a, coarse: x}\n  - {fine: b/c, coarse: x}\n"
    )
    config = Config.model_validate({"data": {"source": {"format": "folder", "path": "pictures"}}, "taxonomy": "taxonomy.yaml",
                                    "views": {"fine-28": {"level": "fine", "resolution": 28}}})
    with pytest.raises(ConfigError, match=re.escape(
        "taxonomy taxonomy.yaml does not fit the classes of pictures: folder train/stray is no class of it; "
        "class 1 (b/c) has no folder in test/"
    )):
        check_inputs(config, ProjectPaths(tmp_path))


@pytest.mark.parametrize(("classes", "message"), [
    (["cat", "dog"], r"class 'bird' of column 'animal' \(12 rows\) is not in it$"),
    (["cat", "dog", "bird", "fish"], r"class 'fish' has no row in column 'animal'$"),
])
def test_a_table_s_taxonomy_that_misses_or_adds_a_class_is_a_configuration_error_in_a_second(tmp_path, capsys, classes, message):
    import time

    from flows.cli import main as granular_cli

    (tmp_path / "data").mkdir()
    animals = ["cat"] * 20 + ["dog"] * 20 + ["bird"] * 12
    pd.DataFrame({"animal": animals, "weight": range(len(animals))}).to_csv(tmp_path / "data" / "table.csv", index=False)
    (tmp_path / "data" / "animals.yaml").write_text(
        "levels: [fine, coarse]\nclasses:\n" + "".join(f"  - {{fine: {name}, coarse: pet}}\n" for name in classes)
    )
    settings = ["data.source={format: csv, path: data/table.csv}", "data.table={target: animal}",
                "taxonomy=data/animals.yaml", "views={fine-all: {level: fine, features: all}}", "distill.enabled=false"]
    started = time.perf_counter()
    assert granular_cli(["run", "--root", str(tmp_path), "--params", str(PARAMS), *(f"--set={s}" for s in settings)]) == 2
    assert time.perf_counter() - started < 1  # the target column read, no server started
    assert re.search(r"configuration error: taxonomy data/animals\.yaml does not fit the classes of data/table\.csv: " + message,
                     capsys.readouterr().err.strip())


@pytest.mark.parametrize(("name", "spec", "message"), [
    ("fine-28-tops-Shirts", "{level: fine, resolution: 28, classes: [tops, Shirts]}",
     r"view fine-28-tops-Shirts: classes: 'Shirts' is no class of the taxonomy at any level"),
    ("fine-28-Shirt", "{level: fine, resolution: 28, classes: [Shirt]}",
     r"view fine-28-Shirt: classes: \['Shirt'\] stand for 1 of the 10 fine classes"),
    ("coarse-28-tops", "{level: coarse, resolution: 28, classes: [tops]}",
     r"view coarse-28-tops: classes: a specialist learns fine classes \(level fine\), not level 'coarse'"),
])
def test_a_specialist_of_no_fine_classes_of_the_taxonomy_is_refused_before_anything_starts(tmp_path, capsys, name, spec, message):
    import shutil

    from flows.cli import main as granular_cli

    (tmp_path / "data").mkdir()
    shutil.copy(PARAMS.parent / "data" / "taxonomy.yaml", tmp_path / "data" / "taxonomy.yaml")
    assert granular_cli(["run", "--root", str(tmp_path), "--params", str(PARAMS), "--set", f"views.{name}={spec}"]) == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize(("setting", "message"), [
    ("data.table={target: species, feature_groups: {petal: [petal_length_cm, petal_width_mm]}}",
     r"feature_groups\.petal: 'petal_width_mm' names no feature column \(did you mean 'petal_width_cm'"),
    ("data.table={target: species, feature_groups: {petal: [\"petals_*\"]}}",
     r"feature_groups\.petal: pattern 'petals_\*' matches no feature column \(did you mean 'petal_length_cm', "
     r"'petal_width_cm'\?\)"),
    ("data.table={target: species, feature_groups: {labels: [\"spec*\"]}}",  # the target is no feature
     r"feature_groups\.labels: pattern 'spec\*' matches no feature column; the feature columns are id, "
     r"sepal_length_cm, sepal_width_cm, petal_length_cm, petal_width_cm, series"),
    ("data.table={target: kind}", r"'kind' \(target\) not in the file"),
    ("views={fine-all: {level: fine, features: all}, "
     "fine-all-colour: {level: fine, features: all, segments: {by: column, column: colour}}}",
     r"'colour' \(segment column of view fine-all-colour\) not in the file"),
])
def test_a_column_the_table_lacks_is_a_configuration_error_before_anything_starts(tmp_path, capsys, setting, message):
    import time

    from flows.cli import main as granular_cli
    from granular.demo.examples import export_example

    export_example("iris", tmp_path / "data" / "iris.csv")
    table = ["data.source={format: csv, path: data/iris.csv}", "taxonomy=null", "distill.enabled=false",
             "data.table={target: species}", "views={fine-all: {level: fine, features: all}}"]
    started = time.perf_counter()
    assert granular_cli(["run", "--root", str(tmp_path), "--params", str(PARAMS), *(
        argument for override in [*table, setting] for argument in ("--set", override)
    )]) == 2
    assert time.perf_counter() - started < 5  # read from the header: no server, no step
    assert re.search(r"configuration error: data\.table: .*iris\.csv: (configured column\(s\) )?" + message,
                     capsys.readouterr().err)


def test_a_parameters_file_that_is_not_utf8_is_refused_by_name(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_bytes("train: {epochs: 2}  # ép\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"params\.yaml is not UTF-8 text \(byte 22: 0xe9\)"):
        load_config(params)


# The views of the shadowing tests, stated rather than params.yaml's: two set their own epochs
# (one its stages too), one sets nothing of its own, none sets its own lr.
OWN_EPOCHS = {
    "fine-28": {"level": "fine", "resolution": 28, "train": {"epochs": 6, "stages": [{"level": "fine", "epochs": 8, "resolution": 14}]}},
    "fine-14": {"level": "fine", "resolution": 14},
    "coarse-28": {"level": "coarse", "resolution": 28, "train": {"epochs": 2}},
}


@pytest.fixture
def own_epochs(tmp_path: Path) -> Path:
    """params.yaml with OWN_EPOCHS as its views."""
    params = yaml.safe_load(PARAMS.read_text())
    params["views"] = OWN_EPOCHS
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _views_with_own(setting: str) -> list[str]:
    """The views of OWN_EPOCHS that set their own train.<setting>."""
    return [name for name, view in OWN_EPOCHS.items() if setting in view.get("train", {})]


def test_a_shared_training_override_that_a_view_shadows_is_refused_with_what_to_set_instead(own_epochs):
    shadowing = _views_with_own("epochs")
    assert shadowing == ["fine-28", "coarse-28"]
    with pytest.raises(ConfigError) as refused:
        load_config(own_epochs, ["train.epochs=2"])
    message = str(refused.value)
    assert message.startswith(f"--set train.epochs=2 changes nothing for view(s) {', '.join(shadowing)}: ")
    for name in shadowing:
        assert f"--set views.{name}.train.epochs=2" in message
    with pytest.raises(ConfigError, match=r"--set train.stages=\[\] changes nothing for view\(s\) fine-28:"):
        load_config(own_epochs, ["train.stages=[]"])


def test_a_shared_training_override_reaches_every_view_that_does_not_shadow_it(own_epochs):
    assert not _views_with_own("lr")
    config = load_config(own_epochs, ["train.lr=0.05"])
    assert {config.train_config(view).lr for view in config.views.values()} == {0.05}


def test_a_shadowed_override_is_accepted_with_each_shadowing_views_own(own_epochs):
    shadowing = _views_with_own("epochs")
    own = [f"views.{name}.train.epochs={3 + number}" for number, name in enumerate(shadowing)]
    config = load_config(own_epochs, ["train.epochs=2", *own])
    assert config.train.epochs == 2
    assert [config.train_config(config.view(name)).epochs for name in shadowing] == [3 + n for n in range(len(shadowing))]
    with pytest.raises(ConfigError, match=f"changes nothing for view\\(s\\) {shadowing[-1]}:"):
        load_config(own_epochs, ["train.epochs=2", *own[:-1]])  # one shadowing view left out


def test_views_of_cotrained_and_transfers_shadow_shared_overrides_too(tmp_path):
    params = yaml.safe_load(PARAMS.read_text())
    params["views"] = {"fine-28": {"level": "fine", "resolution": 28}}  # the view the transfer starts from
    params["transfers"] = {"coarse-28": {"start_from": "fine-28", "level": "coarse", "resolution": 28, "train": {"lr": 0.1}}}
    params["cotrained"] = {"fine-7": {"level": "fine", "resolution": 7, "train": {"width": 16}},
                           "fine-14": {"level": "fine", "resolution": 14}}
    params["cotrain"] = {"pair": {"first": "fine-7", "second": "fine-14", "weight": 0.5}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    assert load_config(path).view("coarse-28").start_from == "fine-28"
    with pytest.raises(ConfigError, match=r"view\(s\) coarse-28: .* --set transfers.coarse-28.train.lr=0.05$"):
        load_config(path, ["train.lr=0.05"])
    with pytest.raises(ConfigError, match=r"view\(s\) fine-7: .* --set cotrained.fine-7.train.width=8$"):
        load_config(path, ["train.width=8"])
    assert load_config(path, ["train.width=8", "cotrained.fine-7.train.width=8"]).train.width == 8


def test_a_shared_epochs_override_of_the_default_run_changes_every_view_or_is_refused_naming_them(tmp_path, capsys):
    """`--set train.epochs=2` on the shipped params.yaml: every view trains 2 epochs, or the
    command stops (exit 2) naming each view whose own train.epochs would silently win."""
    from flows.cli import main as granular_cli

    views = load_config(PARAMS).views
    shadowing = [name for name, view in views.items() if "epochs" in view.train]
    if not shadowing:
        config = load_config(PARAMS, ["train.epochs=2"])
        assert {config.train_config(view).epochs for view in config.views.values()} == {2}
        return
    assert granular_cli(["run", "--root", str(tmp_path), "--params", str(PARAMS), "--set", "train.epochs=2"]) == 2
    error = capsys.readouterr().err
    assert f"--set train.epochs=2 changes nothing for view(s) {', '.join(shadowing)}:" in error
    for name in shadowing:
        assert f"--set views.{name}.train.epochs=2" in error


def test_a_view_that_is_the_hgb_baseline_is_a_configuration_error(tmp_path, capsys):
    """Every table run fits and fuses boosted trees on every feature (`hgb`): a view of the same
    model is refused before anything starts, with views that add something named."""
    from flows.cli import main as granular_cli
    from granular.demo.examples import export_example

    export_example("iris", tmp_path / "data" / "iris.csv")
    table = ["data.source={format: csv, path: data/iris.csv}", "taxonomy=null", "distill.enabled=false",
             "data.table={target: species}", "views={fine-all-hgb: {level: fine, features: all, learner: hgb}}"]
    assert granular_cli(["run", "--root", str(tmp_path), "--params", str(PARAMS),
                         *(argument for override in table for argument in ("--set", override))]) == 2
    assert re.search(
        r"configuration error: .*view fine-all-hgb: the `hgb` baseline is this model \(boosted trees on every feature "
        r"at level fine\), fitted and fused in every table run already; declare a view that adds something: a network "
        r"\(learner: mlp\), a feature group, a coarser level or segments", capsys.readouterr().err,
    )
