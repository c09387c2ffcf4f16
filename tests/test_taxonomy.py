"""Taxonomy: the shipped file, label mapping, deeper hierarchies and every refusal."""
from pathlib import Path

import numpy as np
import pytest

from granular.core.taxonomy import TaxonomyError, load_taxonomy, parse_taxonomy

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "taxonomy.yaml"


def _two_levels(*pairs):
    return {"levels": ["fine", "coarse"], "classes": [{"fine": f, "coarse": c} for f, c in pairs]}


def _three_levels():
    return {
        "levels": ["fine", "mid", "top"],
        "classes": [
            {"fine": "sandal", "mid": "open", "top": "shoes"},
            {"fine": "tee", "mid": "upper", "top": "clothes"},
            {"fine": "boot", "mid": "closed", "top": "shoes"},
            {"fine": "shirt", "mid": "upper", "top": "clothes"},
            {"fine": "sneaker", "mid": "closed", "top": "shoes"},
        ],
    }


def test_shipped_taxonomy_has_ten_fine_and_five_coarse_classes():
    taxonomy = load_taxonomy(SHIPPED)
    assert taxonomy.levels == ("fine", "coarse")
    assert taxonomy.num_classes("fine") == 10
    assert taxonomy.names["coarse"] == ("tops", "trousers", "dresses", "footwear", "bags")
    assert taxonomy.fine_names[0] == "T-shirt/top" and taxonomy.fine_names[9] == "Ankle boot"


def test_shipped_taxonomy_maps_fashion_mnist_labels_to_groups():
    taxonomy = load_taxonomy(SHIPPED)
    coarse = taxonomy.map_labels(np.arange(10), "coarse")
    groups = [taxonomy.names["coarse"][c] for c in coarse]
    assert groups == ["tops", "trousers", "tops", "dresses", "tops",
                      "footwear", "tops", "footwear", "bags", "footwear"]


def test_classes_named_at_any_level_stand_for_the_fine_classes_under_them():
    taxonomy = load_taxonomy(SHIPPED)
    assert taxonomy.fine_ids_under(["tops", "Dress"]).tolist() == [0, 2, 3, 4, 6]
    assert taxonomy.fine_ids_under(["Shirt", "tops"]).tolist() == [0, 2, 4, 6]
    with pytest.raises(TaxonomyError, match="'Shirts' is no class of the taxonomy at any level"):
        taxonomy.fine_ids_under(["Shirts"])


def test_map_labels_uses_first_seen_ids_and_identity_at_fine_level():
    taxonomy = parse_taxonomy(_two_levels(("a", "Y"), ("b", "X"), ("c", "Y")))
    assert taxonomy.names["coarse"] == ("Y", "X")
    np.testing.assert_array_equal(taxonomy.map_labels(np.array([2, 1, 0, 1]), "coarse"), [0, 1, 0, 1])
    np.testing.assert_array_equal(taxonomy.map_labels(np.array([2, 1]), "fine"), [2, 1])


def test_unknown_level_is_refused_with_the_levels_listed():
    taxonomy = parse_taxonomy(_two_levels(("a", "Y")))
    with pytest.raises(TaxonomyError, match=r"unknown taxonomy level 'medium'; levels are \['fine', 'coarse'\]"):
        taxonomy.map_labels(np.array([0]), "medium")


def test_three_level_taxonomy_maps_every_level():
    taxonomy = parse_taxonomy(_three_levels())
    assert taxonomy.levels == ("fine", "mid", "top")
    assert taxonomy.names["mid"] == ("open", "upper", "closed")
    assert taxonomy.names["top"] == ("shoes", "clothes")
    np.testing.assert_array_equal(taxonomy.parent["mid"], [0, 1, 2, 1, 2])
    np.testing.assert_array_equal(taxonomy.map_labels(np.arange(5), "top"), [0, 1, 0, 1, 0])


def test_middle_class_with_two_parents_is_refused_naming_it():
    document = _three_levels()
    document["classes"][4]["top"] = "clothes"  # 'closed' is now under shoes and clothes
    with pytest.raises(TaxonomyError, match="mid class 'closed' has two parents at level 'top': 'shoes' and 'clothes'"):
        parse_taxonomy(document)


def test_fine_class_listed_under_two_parents_is_refused_naming_it():
    document = _two_levels(("Sandal", "footwear"), ("Bag", "bags"), ("Sandal", "bags"))
    with pytest.raises(TaxonomyError, match=r"fine class\(es\) listed twice: \['Sandal'\]"):
        parse_taxonomy(document)


def test_duplicate_fine_name_is_refused():
    document = _two_levels(("Bag", "bags"), ("Bag", "bags"))
    with pytest.raises(TaxonomyError, match=r"listed twice: \['Bag'\]"):
        parse_taxonomy(document)


def test_class_missing_a_level_name_is_refused():
    document = _two_levels(("Bag", "bags"))
    document["classes"].append({"fine": "Coat"})
    with pytest.raises(TaxonomyError, match=r"class #1 \(Coat\) has no name at level\(s\) \['coarse'\]"):
        parse_taxonomy(document)


def test_class_naming_an_unknown_level_is_refused():
    document = _two_levels(("Bag", "bags"))
    document["classes"][0]["colour"] = "brown"
    with pytest.raises(TaxonomyError, match=r"class #0 names unknown level\(s\) \['colour'\]"):
        parse_taxonomy(document)


@pytest.mark.parametrize("bad", ["coarse-grain", "2nd", "with space"])
def test_bad_level_name_is_refused(bad):
    document = {"levels": ["fine", bad], "classes": [{"fine": "a", bad: "b"}]}
    with pytest.raises(TaxonomyError, match="level names must be letters, digits and '_'"):
        parse_taxonomy(document)


def test_level_named_twice_is_refused():
    with pytest.raises(TaxonomyError, match="a level is named twice"):
        parse_taxonomy({"levels": ["fine", "fine"], "classes": [{"fine": "a"}]})


@pytest.mark.parametrize("document", [{"classes": [{"fine": "a"}]}, {"levels": [], "classes": []}, ["fine"]])
def test_missing_levels_are_refused(document):
    with pytest.raises(TaxonomyError, match="'levels' must be a non-empty list"):
        parse_taxonomy(document)


def test_empty_class_list_is_refused():
    with pytest.raises(TaxonomyError, match="'classes' must be a non-empty list"):
        parse_taxonomy({"levels": ["fine"], "classes": []})


def test_missing_taxonomy_file_is_named(tmp_path):
    with pytest.raises(TaxonomyError, match="no taxonomy file at .*absent.yaml"):
        load_taxonomy(tmp_path / "absent.yaml")


def test_invalid_yaml_is_refused(tmp_path):
    (tmp_path / "t.yaml").write_text("levels: [fine\n")
    with pytest.raises(TaxonomyError, match="t.yaml is not valid YAML"):
        load_taxonomy(tmp_path / "t.yaml")


def test_errors_name_the_source_file(tmp_path):
    (tmp_path / "t.yaml").write_text("levels: [fine]\nclasses: [{fine: a}, {fine: a}]\n")
    with pytest.raises(TaxonomyError, match=r"t\.yaml: fine class\(es\) listed twice"):
        load_taxonomy(tmp_path / "t.yaml")
