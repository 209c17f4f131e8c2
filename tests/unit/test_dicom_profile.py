"""Every row of the vendored PS3.15 Annex E table is honoured, with and without options.

For each row whose tag can be instantiated, a file is generated that carries the attribute
with a plausible value of its VR (pydicom's dictionary), de-identified, and the outcome is
checked against the action the table gives (combined codes resolved by the attribute's
Type in the CT Image IOD). For each option, the rows whose action changes are exactly the
rows with a different value in that option's column, and the output follows.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from medfed.node.ingest.dicom.clean import clean_text
from medfed.node.ingest.dicom.dates import shift_da, shift_dt
from medfed.node.ingest.dicom.deid import Deidentifier
from medfed.node.ingest.dicom.iodtypes import iod_type
from medfed.node.ingest.dicom.profile import (
    OPTION_COLUMNS,
    Option,
    TableRow,
    build_profile,
    load_table,
    parse_options,
    resolve,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
SECRET = "node-secret-for-tests"
PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020
MEDIA_SOP_INSTANCE = 0x00020003


def instantiate(row: TableRow) -> int | None:
    """A concrete tag for the row (masks: the first group of the repeating range)."""
    if row.is_private:
        return 0x00091001
    if row.is_mask:
        text = row.tag[1:5] + row.tag[6:10]
        if text.upper() == "50XXXXXX":
            return 0x50003000  # Curve Data
        return int(text.upper().replace("X", "0"), 16)
    return row.exact()


def vr_of(tag: int) -> str:
    if tag == 0x00091001:
        return "LO"
    vr = dictionary_VR(tag).split(" or ")[0]
    return "OB" if vr == "ox" else vr


def value_of(vr: str, n: int) -> Any:
    """A plausible, distinct value of ``vr``."""
    text = {
        "AE": f"STATION{n}",
        "AS": "045Y",
        "CS": f"VALUE{n}",
        "DA": "20210315",
        "DT": "20210315101112",
        "TM": "101112",
        "DS": "12.5",
        "IS": str(40 + n),
        "LO": f"KNEE MRI 20210315 7{n:07d}",
        "LT": f"KNEE MRI 20210315 7{n:07d}",
        "ST": f"KNEE MRI 20210315 7{n:07d}",
        "UT": f"KNEE MRI 20210315 7{n:07d}",
        "UC": f"KNEE MRI 20210315 7{n:07d}",
        "SH": f"KNEE {n}",
        "PN": f"Doe{n}^John",
        "UI": f"1.2.3.4.5.6.7.{n}",
        "UR": f"http://example.org/{n}",
    }
    if vr in text:
        return text[vr]
    if vr in ("US", "SS", "UL", "SL", "SV", "UV"):
        return 7
    if vr in ("FL", "FD"):
        return 1.5
    if vr == "AT":
        return 0x00100010
    if vr == "SQ":
        item = Dataset()
        item.CodeValue = f"C{n}"
        item.CodingSchemeDesignator = "DCM"
        return Sequence([item])
    return b"\x01\x02"


def make(tag: int, vr: str, value: Any, sop_class: str = CT) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = "1.2.3.4.5.6.7.999"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if tag == MEDIA_SOP_INSTANCE:  # a consistent file: meta and dataset name one instance
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = value
    else:
        if tag == 0x00091001:
            ds.add_new(0x00090010, "LO", "ACME 1.0")
        ds.add_new(tag, vr, value)
    return ds


def is_empty(value: Any) -> bool:
    return (
        value is None or value == "" or value == b"" or (isinstance(value, Sequence) and not value)
    )


def check(action: str, tag: int, vr: str, value: Any, out: Dataset, engine: Deidentifier) -> None:
    """Assert that ``out`` shows ``action`` applied to the attribute."""
    where = out.file_meta if tag >> 16 == 0x0002 else out
    if tag in (PATIENT_NAME, PATIENT_ID):  # Z allows a dummy: the keyed pseudonym
        assert action == "Z"
        assert str(where[tag].value) == engine.pseudonym(value if tag == PATIENT_ID else "")
        return
    if action == "X":
        assert tag not in where
        if tag == 0x00091001:
            assert 0x00090010 not in where
        return
    assert tag in where, f"{action}: attribute removed"
    got = where[tag].value
    if action == "Z":
        assert is_empty(got)
    elif action == "D":
        assert not is_empty(got)
        if vr == "SQ":
            assert got[0].CodeValue != value[0].CodeValue  # item text replaced by dummies
        else:
            assert got != value
    elif action == "K":
        if vr == "SQ":
            assert len(got) == len(value) and got[0].CodeValue == value[0].CodeValue
        else:
            assert got == value
    elif action == "U":
        assert str(got) == engine.uids.map(str(value)) and str(got).startswith("2.25.")
    else:
        raise AssertionError(f"unexpected action {action}")


def rows_with_tags() -> list[tuple[TableRow, int]]:
    return [(row, tag) for row in load_table() if (tag := instantiate(row)) is not None]


def test_table_is_complete_and_well_formed() -> None:
    rows = load_table()
    assert len(rows) == 432  # 433 entries, (3008,0105) listed twice
    codes = {"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "X/Z/D", "Z/D", "X/Z/U*"}
    assert {row.basic for row in rows} <= codes
    assert sum(row.is_mask for row in rows) == 3 and sum(row.is_private for row in rows) == 1
    assert len(rows_with_tags()) == len(rows)  # every row instantiated, no mask skipped
    for row in rows:
        assert set(row.options) <= set(OPTION_COLUMNS.values())


def test_combined_codes_resolve_by_type() -> None:
    assert [resolve("X/Z", t) for t in (1, 2, 3)] == ["Z", "Z", "X"]
    assert [resolve("X/D", t) for t in (1, 2, 3)] == ["D", "D", "X"]
    assert [resolve("Z/D", t) for t in (1, 2, 3)] == ["D", "Z", "Z"]
    assert [resolve("X/Z/D", t) for t in (1, 2, 3)] == ["D", "Z", "X"]
    assert [resolve("X/Z/U*", t) for t in (1, 2, 3)] == ["U", "Z", "X"]
    assert resolve("K", 1) == "K"
    # Types from the standard: Acquisition Date is Type 3 in CT, Content Date Type 2C
    assert iod_type(0x00080022, CT, nested=False) == 3
    assert iod_type(0x00080023, CT, nested=False) == 2
    assert iod_type(0x00081140, "1.2.840.10008.5.1.4.1.1.12.1", nested=False) == 1
    assert iod_type(0x00080023, "1.2.999.unknown", nested=False) == 1  # strictest anywhere


def test_every_basic_profile_row_is_honoured() -> None:
    engine = Deidentifier(SECRET)
    seen: dict[str, int] = {}
    for n, (row, tag) in enumerate(rows_with_tags()):
        vr = vr_of(tag)
        value = value_of(vr, n)
        action = resolve(row.basic, iod_type(tag, CT, nested=False))
        out = engine.deidentify(make(tag, vr, value)).dataset
        try:
            check(action, tag, vr, value, out, engine)
        except AssertionError as exc:
            raise AssertionError(
                f"row {row.tag} {row.name} ({row.basic}→{action}): {exc}"
            ) from None
        seen[action] = seen.get(action, 0) + 1
    assert set(seen) == {"D", "Z", "X", "U"}  # the Basic Profile has no K or C
    assert sum(seen.values()) == 432


@pytest.mark.parametrize("option", list(Option))
def test_each_option_changes_exactly_its_rows(option: Option) -> None:
    column = OPTION_COLUMNS[option]
    basic = build_profile(frozenset())
    with_option = build_profile(frozenset({option}))
    changed = {
        t
        for t in set(basic.exact) | set(with_option.exact)
        if basic.exact.get(t) != with_option.exact.get(t)
    }
    expected = {
        row.exact()
        for row in load_table()
        if not row.is_mask
        and not row.is_private
        and row.options.get(column, row.basic) != row.basic
    }
    assert changed == expected
    for row in load_table():
        if column in row.options:
            assert row.action([option]) == row.options[column]
    masks_changed = [m for m, b in zip(with_option.masks, basic.masks, strict=True) if m != b]
    expected_masks = [r for r in load_table() if r.is_mask and column in r.options]
    assert len(masks_changed) == len(expected_masks)
    assert (with_option.private != basic.private) == (option is Option.RETAIN_SAFE_PRIVATE)


@pytest.mark.parametrize("option", list(Option))
def test_each_option_output_follows_the_table(option: Option) -> None:
    column = OPTION_COLUMNS[option]
    engine = Deidentifier(SECRET, [option])
    offset = engine.date_offset("")
    for n, (row, tag) in enumerate(rows_with_tags()):
        if column not in row.options or row.is_private:
            continue
        vr = vr_of(tag)
        value = value_of(vr, n)
        action = resolve(row.options[column], iod_type(tag, CT, nested=False))
        out = engine.deidentify(make(tag, vr, value)).dataset
        if action != "C":
            check(action, tag, vr, value, out, engine)
            continue
        got = out[tag].value  # cleaned: present, with the identifying parts gone
        if vr == "DA":
            assert got == shift_da(value, offset) != value
        elif vr == "DT":
            assert got == shift_dt(value, offset) != value
        elif vr in ("TM", "SH") and option is Option.RETAIN_MODIFIED_DATES:
            assert got == value  # whole-day shift: times (and the UTC offset) unchanged
        elif vr == "SQ":
            assert len(got) == 1 and got[0].CodeValue == value[0].CodeValue
        elif vr in ("OB", "OW"):
            assert got == bytes(len(value))  # binary: cannot be read, blanked
        else:
            assert got == clean_text(value, None) == ("KNEE MRI" if vr != "SH" else value)


def test_safe_private_keeps_only_numeric_private_values() -> None:
    ds = make(0x00091001, "LO", "Doe^John")
    ds.add_new(0x00091002, "US", 12)
    ds.add_new(0x00091003, "DS", "2.5")
    ds.PatientID = "4455667"
    ds.add_new(0x00091004, "IS", "4455667")  # a number that is the patient's ID
    out = Deidentifier(SECRET, [Option.RETAIN_SAFE_PRIVATE]).deidentify(ds).dataset
    assert 0x00091001 not in out and out[0x00091002].value == 12 and 0x00090010 in out
    assert 0x00091003 in out and 0x00091004 not in out
    assert all(not e.tag.is_private for e in Deidentifier(SECRET).deidentify(ds).dataset)


def test_options_parse_and_conflicts() -> None:
    assert parse_options(["retain-uids", "CLEAN-DESCRIPTORS"]) == {
        Option.RETAIN_UIDS,
        Option.CLEAN_DESCRIPTORS,
    }
    with pytest.raises(Exception, match="unknown de-identification option"):
        parse_options(["retain-everything"])
    with pytest.raises(Exception, match="exclude each other"):
        parse_options(["retain-full-dates", "retain-modified-dates"])
