"""The LibSVM reader: round trip, label mappings and one precise error per malformed case."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_commeff.problems import LibSVMFormatError, load_libsvm


def write(tmp_path: Path, text: str, name: str = "data.svm") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_round_trip_with_trailing_spaces_blank_lines_comments_and_mushrooms_labels(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# header comment\n"
        "1 1:1 3:0.5 \n"  # trailing space, as in the LibSVM originals
        "\n"
        "2 2:-2.25e1\t4:1   \n"
        "   \n"
        "1 4:3 # a comment after the data\n"
        "2\n",  # a row without features
    )
    A, b = load_libsvm(path)
    expected = torch.tensor(
        [[1.0, 0.0, 0.5, 0.0], [0.0, -22.5, 0.0, 1.0], [0.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]],
        dtype=torch.float64,
    )
    assert A.dtype == torch.float64 and b.dtype == torch.float64
    assert torch.equal(A, expected)
    assert b.tolist() == [1.0, -1.0, 1.0, -1.0]  # 1 -> +1, 2 -> -1


def test_n_features_pads_columns_and_dtype_is_respected(tmp_path: Path) -> None:
    path = write(tmp_path, "+1 1:1 2:1\n-1 2:1\n")
    A, b = load_libsvm(str(path), n_features=5, dtype=torch.float32)
    assert A.shape == (2, 5) and A.dtype == torch.float32 and b.dtype == torch.float32
    assert A[:, 2:].abs().sum() == 0
    assert b.tolist() == [1.0, -1.0]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["+1", "-1", "1"], [1.0, -1.0, 1.0]),
        (["0", "1", "0"], [-1.0, 1.0, -1.0]),
        (["1", "2", "2"], [1.0, -1.0, -1.0]),
        (["1", "1"], [1.0, 1.0]),
        (["2", "2"], [-1.0, -1.0]),
        (["0"], [-1.0]),
    ],
)
def test_binary_label_mappings(tmp_path: Path, labels: list[str], expected: list[float]) -> None:
    path = write(tmp_path, "".join(f"{lab} 1:1\n" for lab in labels))
    _, b = load_libsvm(path)
    assert b.tolist() == expected


MALFORMED = [
    # (file text, n_features, line number, reason fragment)
    ("1 1:1\nabc 1:1\n", None, 2, "bad label 'abc'"),
    ("1 1:1\nnan 1:1\n", None, 2, "bad label 'nan'"),
    ("1 1:1\n\n-1 3\n", None, 3, "token '3' has no ':'"),
    ("1 a:1\n", None, 1, "index 'a' in token 'a:1' is not an integer"),
    ("1 1.5:1\n", None, 1, "index '1.5' in token '1.5:1' is not an integer"),
    ("1 0:1\n", None, 1, "indices are 1-based"),
    ("-1 1:1\n1 -2:1\n", None, 2, "indices are 1-based"),
    ("1 2:1 2:1\n", None, 1, "indices must be strictly increasing"),
    ("1 1:1\n1 3:1 2:1\n", None, 2, "indices must be strictly increasing"),
    ("1 1:x\n", None, 1, "value 'x' in token '1:x' is not a number"),
    ("1 1:1:1\n", None, 1, "is not a number"),
    ("1 1:nan\n", None, 1, "is not finite"),
    ("1 1:1 2:-inf\n", None, 1, "is not finite"),
    ("1 1:1\n-1 5:1\n", 4, 2, "index 5 in token '5:1' exceeds n_features=4"),
]


@pytest.mark.parametrize(("text", "n_features", "line_no", "reason"), MALFORMED)
def test_malformed_lines_name_path_line_and_reason(
    tmp_path: Path, text: str, n_features: int | None, line_no: int, reason: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(LibSVMFormatError) as info:
        load_libsvm(path, n_features=n_features)
    message = str(info.value)
    assert message.startswith(f"{path}:{line_no}: "), message
    assert reason in message
    assert isinstance(info.value, ValueError)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.svm"
    with pytest.raises(FileNotFoundError) as info:
        load_libsvm(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["", "\n   \n", "# only a comment\n\n"])
def test_file_without_data_rows(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(LibSVMFormatError, match="no data rows") as info:
        load_libsvm(path)
    assert str(path) in str(info.value)


def test_more_than_two_labels_are_listed(tmp_path: Path) -> None:
    path = write(tmp_path, "1 1:1\n2 1:1\n3 1:1\n")
    with pytest.raises(LibSVMFormatError, match=r"3 distinct labels \{1, 2, 3\}") as info:
        load_libsvm(path)
    assert str(path) in str(info.value)


def test_two_unsupported_labels(tmp_path: Path) -> None:
    path = write(tmp_path, "3 1:1\n5 1:1\n")
    with pytest.raises(LibSVMFormatError, match=r"labels \{3, 5\} are not a supported binary encoding"):
        load_libsvm(path)


def test_rows_without_any_feature_need_n_features(tmp_path: Path) -> None:
    path = write(tmp_path, "1\n-1\n")
    with pytest.raises(LibSVMFormatError, match="pass n_features"):
        load_libsvm(path)
    A, b = load_libsvm(path, n_features=3)
    assert A.shape == (2, 3) and A.abs().sum() == 0 and b.tolist() == [1.0, -1.0]


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "7"])
def test_bad_n_features(tmp_path: Path, bad: object) -> None:
    path = write(tmp_path, "1 1:1\n")
    with pytest.raises(ValueError, match="n_features"):
        load_libsvm(path, n_features=bad)  # type: ignore[arg-type]


def test_bad_dtype(tmp_path: Path) -> None:
    path = write(tmp_path, "1 1:1\n")
    with pytest.raises(ValueError, match="dtype"):
        load_libsvm(path, dtype=torch.int64)
