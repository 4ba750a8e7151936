"""The table reader (``imdad_jax.io.tables``) called directly: a user's CSV / TSV / .npy / .npz into a feature
matrix and 0/1 labels, and each bad file answered by one ``TableError`` that says what to fix.

Nothing here trains; the end-to-end runs through the command line are in ``test_user_cli.py``.
"""
import gzip

import numpy as np
import pytest

from imdad_jax.io.tables import (Table, TableError, choose_features, describe_columns, feature_matrix, file_kind,
                                 label_vector, read_table, require_label_column)


def _text(path, text, gz=False):
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# ---- good files -----------------------------------------------------------------------------------------
def test_csv_with_header_and_label_column(tmp_path):
    # a byte-order mark, spaces around names, an id column, label words in any case, a blank last line
    path = _text(tmp_path / "t.csv", "\ufeffid, a ,b,target\nr1,1.5,2,0\nr2,-3,1e3, Anomaly \nr3,0,.5,normal\n\n")
    table = read_table(path)
    assert table.names == ["id", "a", "b", "target"] and table.n_rows == 3 and table.lines == [2, 3, 4]
    require_label_column(table, "target")
    names = choose_features(table, "a,b", "target")
    x = feature_matrix(table, names)
    assert x.dtype == np.float64 and x.shape == (3, 2)
    np.testing.assert_array_equal(x, [[1.5, 2.0], [-3.0, 1000.0], [0.0, 0.5]])
    y = label_vector(table, "target")
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 0]


def test_default_features_are_every_column_but_the_label_in_file_order(tmp_path):
    table = read_table(_text(tmp_path / "t.csv", "b,label,a\n1,0,2\n3,1,4\n"))
    assert choose_features(table, None, "label") == ["b", "a"]
    np.testing.assert_array_equal(feature_matrix(table, ["a", "b"]), [[2, 1], [4, 3]])  # the order asked for


@pytest.mark.parametrize("name, gz", [("t.tsv", False), ("t.tsv.gz", True), ("T.CSV.GZ", True)])
def test_tsv_and_gzipped_tables(tmp_path, name, gz):
    sep = "\t" if ".tsv" in name else ","
    path = _text(tmp_path / name, f"a{sep}b{sep}label\n1{sep}2{sep}1\n3{sep}4{sep}0\n", gz=gz)
    table = read_table(path)
    assert file_kind(path) == name.lower()[1:] and table.names == ["a", "b", "label"]
    np.testing.assert_array_equal(feature_matrix(table, ["a", "b"]), [[1, 2], [3, 4]])
    assert label_vector(table, "label").tolist() == [1, 0]


def test_npy_last_column_is_the_label_unless_told_otherwise(tmp_path):
    a = np.array([[1.0, 2.0, 0.0], [3.0, 4.0, 1.0]])
    np.save(tmp_path / "a.npy", a)
    table = read_table(tmp_path / "a.npy")
    assert table.names == ["x0", "x1"] and label_vector(table, None).tolist() == [0, 1]
    assert read_table(tmp_path / "a.npy", unlabelled=True).names == ["x0", "x1", "x2"]
    # scoring: with a model of 3 features the last column is a feature, with 2 it is the label
    assert label_vector(read_table(tmp_path / "a.npy", n_features=3), None) is None
    assert read_table(tmp_path / "a.npy", n_features=2).names == ["x0", "x1"]
    np.save(tmp_path / "y.npy", np.array([1, 0], np.uint8))
    table = read_table(tmp_path / "a.npy", labels_path=str(tmp_path / "y.npy"))
    assert table.names == ["x0", "x1", "x2"] and label_vector(table, None).tolist() == [1, 0]


def test_npz_arrays_x_and_y(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.arange(6).reshape(3, 2), y=np.array([[0], [1], [0]]))
    table = read_table(tmp_path / "d.npz")
    assert isinstance(table, Table) and table.n_rows == 3 and table.where(1) == "row 1"
    np.testing.assert_array_equal(feature_matrix(table, ["x0", "x1"]), [[0, 1], [2, 3], [4, 5]])
    assert label_vector(table, "label").tolist() == [0, 1, 0]  # the label column name is unused for arrays


def test_a_bad_cell_in_an_unused_column_does_not_stop_reading(tmp_path):
    table = read_table(_text(tmp_path / "t.csv", "note,a,label\nhello,1,0\n,2,1\n"))
    np.testing.assert_array_equal(feature_matrix(table, ["a"]), [[1], [2]])


# ---- bad files: one TableError each ----------------------------------------------------------------------
def test_bad_value_names_the_column_row_and_line(tmp_path):
    table = read_table(_text(tmp_path / "t.csv", "a,b,label\n1,2,0\n3,red,1\n"))
    with pytest.raises(TableError, match=r"t\.csv: column 'b' is not numeric: row 1 \(line 3\) holds 'red'; "
                                         r"convert it to numbers, or leave it out .* --features a,b,c$"):
        feature_matrix(table, ["a", "b"])


def test_missing_and_infinite_cells_are_counted_per_column(tmp_path):
    table = read_table(_text(tmp_path / "t.csv", "a,b,c\n1,,3\n1,NA,3\n1,2,inf\n?,2,3\n"))
    with pytest.raises(TableError) as e:
        feature_matrix(table, ["a", "b", "c"])
    assert str(e.value) == (f"{tmp_path / 't.csv'}: empty, NaN or infinite cells in feature column(s) 'a' (1), "
                            "'b' (2), 'c' (1), 4 row(s) in all (first: row 0 (line 2)); drop those rows or impute "
                            "the cells (e.g. with the column median) and run again")


def test_bad_label_names_the_first_and_counts_them(tmp_path):
    table = read_table(_text(tmp_path / "t.csv", "a,target\n1,0\n2,yes\n3,2\n"))
    with pytest.raises(TableError, match=r"label column 'target' must hold 0 .* row 1 \(line 3\) holds 'yes' "
                                         r"\(2 row\(s\) in all\)"):
        label_vector(table, "target")
    np.save(tmp_path / "a.npy", np.zeros((3, 2)))
    np.save(tmp_path / "y.npy", np.array([0, 1, 255], np.uint8))  # a bad uint8 label must not pass as -1 -> 255
    with pytest.raises(TableError, match=r"the labels must hold 0 .* row 2 holds np.uint8\(255\)"):
        label_vector(read_table(tmp_path / "a.npy", labels_path=str(tmp_path / "y.npy")), None)


@pytest.mark.parametrize("name, text, fragment", [
    ("t.xlsx", "a\n1\n", "unsupported file type '.xlsx'"),
    ("t.csv", "", "is empty; it needs a header line"),
    ("t.csv", "1,2,3\n4,5,6\n", "the first line (1,2,3...) looks like data, not column names"),
    ("t.csv", "a,,c\n1,2,3\n", "column 2 of the header has no name"),
    ("t.csv", "a,b,a,b\n1,2,3,4\n", "the header names 'a', 'b' more than once"),
    ("t.csv", "a,b,c\n1,2,3\n1,2\n", "t.csv, line 3: 2 fields, but the header has 3; the file may be truncated, "
                                     "or a value holds an unquoted comma"),
    ("t.tsv", "a\tb\n1\t2\t3\n", "a value holds an unquoted tab"),
])
def test_bad_text_files(tmp_path, name, text, fragment):
    with pytest.raises(TableError) as e:
        read_table(_text(tmp_path / name, text))
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_not_utf8_cut_gzip_missing_file_and_folder(tmp_path):
    (tmp_path / "l.csv").write_bytes("a,caf\u00e9\n1,2\n".encode("latin-1"))
    with pytest.raises(TableError, match="is not UTF-8 text .*; export it as UTF-8 CSV"):
        read_table(tmp_path / "l.csv")
    raw = gzip.compress(b"a,b\n" + b"1,2\n" * 200)
    (tmp_path / "c.csv.gz").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(TableError, match="cannot read it as CSV"):
        read_table(tmp_path / "c.csv.gz")
    with pytest.raises(TableError, match=r"nope\.csv: file not found \(check the path"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(TableError, match="is a folder; give a data file"):
        read_table(tmp_path)


def test_bad_array_files(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((4, 3, 3)))
    np.save(tmp_path / "cx.npy", np.zeros((4, 3), complex))
    np.save(tmp_path / "one.npy", np.zeros((4, 1)))
    np.savez(tmp_path / "noX.npz", data=np.zeros((4, 3)))
    np.savez(tmp_path / "short.npz", X=np.zeros((4, 3)), y=np.zeros(3))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases = {
        "cube.npy": "the array has shape (4, 3, 3); the command line takes a table",
        "cx.npy": "the array holds complex128, not real numbers",
        "one.npy": "has one column; the last column is read as the label",
        "noX.npz": "has no array named 'X' (it holds data)",
        "short.npz": "4 rows but 3 labels; give one label per row",
        "obj.npy": "cannot read the array (",
    }
    for name, fragment in cases.items():
        with pytest.raises(TableError) as e:
            read_table(tmp_path / name)
        assert fragment in str(e.value), (name, str(e.value))
    with pytest.raises(TableError, match="--labels is for .npy files"):
        read_table(_text(tmp_path / "t.csv", "a\n1\n"), labels_path="y.npy")
    with pytest.raises(TableError, match="already holds labels"):
        read_table(tmp_path / "short.npz", labels_path=str(tmp_path / "one.npy"))


def test_column_choices_are_checked(tmp_path):
    table = read_table(_text(tmp_path / "t.csv", "a,b,label\n1,2,0\n"))
    with pytest.raises(TableError, match=r"--features: .* has no column\(s\) 'zz'; its columns: a, b, label$"):
        choose_features(table, "a,zz", "label")
    with pytest.raises(TableError, match="--features lists the label column 'label'"):
        choose_features(table, "a,label", "label")
    with pytest.raises(TableError, match="--features names a column more than once"):
        choose_features(table, "a, a", "label")
    with pytest.raises(TableError, match="has no label column 'target'; its columns: a, b, label. Name yours"):
        require_label_column(table, "target")
    only_label = read_table(_text(tmp_path / "l.csv", "label\n0\n"))
    with pytest.raises(TableError, match="has no feature columns besides the label column 'label'$"):
        choose_features(only_label, None, "label")


def test_describe_columns_stays_short_for_wide_files(tmp_path):
    table = read_table(_text(tmp_path / "w.csv", ",".join(f"c{i}" for i in range(40)) + "\n" + "1," * 39 + "1\n"))
    assert describe_columns(table).endswith("c29, ... (40 in all)")


def test_table_error_is_a_value_error_and_the_cli_still_exports_the_reader():
    import imdad_jax.cli as cli

    assert issubclass(TableError, ValueError)
    assert cli.read_table is read_table and cli.feature_matrix is feature_matrix and cli.Table is Table
