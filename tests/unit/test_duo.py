"""DUO vocabulary and matching: the cases a data access committee meets."""

from __future__ import annotations

import pytest

from medfed.common.duo import IntendedUse, known_codes, label, match, validate_codes
from medfed.common.errors import BadRequest


def test_known_codes_carry_their_duo_ids() -> None:
    codes = known_codes()
    for code in ("GRU", "HMB", "DS", "POA", "NRES", "NCU", "NPU", "NPUNCU", "IRB", "PUB", "COL"):
        assert code in codes
    assert label("GRU") == "GRU (DUO:0000042, general research use)"
    assert label("HMB").startswith("HMB (DUO:0000006")
    assert label("DS:asthma").startswith("DS: asthma (DUO:0000007")
    assert label("NCU").startswith("NCU (DUO:0000046")
    assert label("IRB").startswith("IRB (DUO:0000021")


def test_validate_canonicalises_shorthand_and_ids() -> None:
    assert validate_codes(["hmb", "DUO:0000021", "ds:Breast Cancer", "HMB", "TS:12"]) == [
        "HMB",
        "IRB",
        "DS:Breast Cancer",
        "TS:12",
    ]
    assert validate_codes(["DUO:0000007:asthma"]) == ["DS:asthma"]


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        ("XYZ", "unknown DUO code 'XYZ'"),
        ("DUO:0009999", "unknown DUO code 'DUO:0009999'"),
        ("DS", "DS needs a parameter"),
        ("NCU:x", "NCU takes no parameter"),
        ("TS:soon", "TS takes a number of months"),
        ("MOR:tomorrow", "MOR takes an ISO date"),
        ("  ", "empty DUO code"),
    ],
)
def test_validate_names_the_bad_code(code: str, needle: str) -> None:
    with pytest.raises(BadRequest, match=needle):
        validate_codes(["HMB", code])


def test_hmb_dataset_refuses_ancestry_research() -> None:
    problems = match(["HMB"], IntendedUse(codes=["POA"]))
    assert len(problems) == 1
    assert "POA" in problems[0] and "not allowed" in problems[0] and "HMB" in problems[0]
    assert match(["HMB"], IntendedUse(codes=["HMB"])) == []
    assert match(["HMB"], IntendedUse(codes=["DS:lung cancer"])) == []


def test_gru_and_nres_cover_every_research_purpose() -> None:
    for purpose in ("GRU", "HMB", "DS:asthma", "POA"):
        assert match(["GRU"], IntendedUse(codes=[purpose])) == []
        assert match(["NRES"], IntendedUse(codes=[purpose])) == []
    assert match(["HMB"], IntendedUse(codes=["GRU"])) != []


def test_disease_specific_needs_the_same_disease() -> None:
    assert match(["DS:Breast  Cancer"], IntendedUse(codes=["DS:breast cancer"])) == []
    problems = match(["DS:breast cancer"], IntendedUse(codes=["DS:asthma"]))
    assert len(problems) == 1 and "asthma" in problems[0] and "breast cancer" in problems[0]
    assert match(["DS:breast cancer"], IntendedUse(codes=["HMB"])) != []


def test_commercial_use_against_ncu_npu_npuncu() -> None:
    commercial = IntendedUse(codes=["HMB"], commercial=True)
    for_profit = IntendedUse(codes=["HMB"], for_profit_organization=True)
    assert "commercial" in match(["HMB", "NCU"], commercial)[0]
    assert match(["HMB", "NCU"], for_profit) == []
    assert "for-profit" in match(["HMB", "NPU"], for_profit)[0]
    assert match(["HMB", "NPUNCU"], commercial) and match(["HMB", "NPUNCU"], for_profit)
    assert match(["HMB", "NCU", "NPU", "NPUNCU"], IntendedUse(codes=["HMB"])) == []


def test_irb_col_pub_need_the_matching_statements() -> None:
    bare = IntendedUse(codes=["HMB"], will_publish=False)
    problems = match(["HMB", "IRB", "COL", "PUB"], bare)
    assert any("IRB" in p and "ethics approval reference" in p for p in problems)
    assert any("COL" in p and "collaboration statement" in p for p in problems)
    assert any("PUB" in p and "publish" in p for p in problems)
    full = IntendedUse(
        codes=["HMB"], ethics_reference="EC-2025-17", collaboration_statement="with Dr. A"
    )
    assert match(["HMB", "IRB", "COL", "PUB"], full) == []


def test_npoa_time_limit_methods_and_judgement_codes() -> None:
    assert "population origins" in match(["GRU", "NPOA"], IntendedUse(codes=["POA"]))[0]
    assert match(["GRU", "TS:12"], IntendedUse(codes=["HMB"], duration_days=365)) == []
    assert (
        "the limit is 12 months"
        in match(["GRU", "TS:12"], IntendedUse(codes=["HMB"], duration_days=800))[0]
    )
    assert (
        "methods development"
        in match(["HMB", "NMDS"], IntendedUse(codes=["HMB"], methods_development=True))[0]
    )
    assert match(["HMB", "GS:EU"], IntendedUse(codes=["HMB"])) == [
        "check: GS: EU (DUO:0000022, geographical restriction)"
    ]


def test_clinical_care_and_empty_cases() -> None:
    assert match(["HMB"], IntendedUse(codes=["HMB", "CC"])) != []
    assert match(["HMB", "CC"], IntendedUse(codes=["HMB", "CC"])) == []
    assert match([], IntendedUse(codes=["POA"], commercial=True)) == []
    assert "names no purpose" in match(["HMB"], IntendedUse(codes=[]))[0]
    with pytest.raises(BadRequest, match="must be purposes"):
        match(["HMB"], IntendedUse(codes=["NCU"]))
