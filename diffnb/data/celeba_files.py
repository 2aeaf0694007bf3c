"""CelebA's list files, as torchvision's layout has them (``diffnb.data.celeba`` reads the images):
    list_eval_partition.txt   "000001.jpg 0" per image: 0 train, 1 valid, 2 test
    list_attr_celeba.txt      a count, the 40 attribute names, then "000001.jpg -1 1 ..." per image
A missing file, or a line that does not parse, is an error naming the file (and the line) and
saying what to do.
"""
from __future__ import annotations

from pathlib import Path

from diffnb.data.fashion_mnist import DataNotFoundError

PARTITION, ATTRIBUTES = "list_eval_partition.txt", "list_attr_celeba.txt"
AGAIN = "copy CelebA's list files in again from torchvision's CelebA download"


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataNotFoundError(f"CelebA's {path.name} is missing: expected {path} "
                                f"(torchvision's CelebA layout); {AGAIN}")
    return path.read_text().splitlines()


def read_partition(root: Path) -> dict[str, int]:
    """Image file name -> split number (0 train, 1 valid, 2 test)."""
    out = {}
    for i, line in enumerate(_lines(root / PARTITION), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise ValueError(f"{root / PARTITION}, line {i}: expected '<name>.jpg 0|1|2', "
                             f"got {line!r}; {AGAIN}")
        out[parts[0]] = int(parts[1])
    return out


def read_attributes(root: Path) -> tuple[list[str], dict[str, list[int]]]:
    """The attribute names and, per image file name, its -1/1 values."""
    lines = _lines(root / ATTRIBUTES)
    if len(lines) < 2:
        raise ValueError(f"{root / ATTRIBUTES} has no header (a count, then the names); {AGAIN}")
    names = lines[1].split()
    rows = {}
    for i, line in enumerate(lines[2:], 3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1 or not set(parts[1:]) <= {"-1", "1"}:
            raise ValueError(f"{root / ATTRIBUTES}, line {i}: expected a name and "
                             f"{len(names)} values of -1/1, got {line[:80]!r}; {AGAIN}")
        rows[parts[0]] = [int(v) for v in parts[1:]]
    return names, rows
