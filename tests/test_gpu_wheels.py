"""The borrowed GPU machine gets every package diffnb needs there: what its image holds
(scripts/gpu/image.txt) plus the wheels the runbook carries (scripts/gpu/wheels.txt), closed under
their requirements for the machine's Python 3.12 on Linux (``prepare.py`` checks the same on the
wheels it downloads)."""
import importlib.metadata as md
import zipfile
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from diffnb import carry

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "scripts" / "gpu"


def test_carried_wheels_are_this_projects_pins_and_close_over_the_image():
    carried, image = carry.read_pins(GPU / "wheels.txt"), carry.read_pins(GPU / "image.txt")
    pinned = carry.read_pins(ROOT / "requirements.txt")
    assert {"pytorch-fid", "nbclient", "ipykernel"} <= set(carried)
    assert not set(carried) & set(image), "carried although the image holds it"
    # what requirements.txt pins (what CI tests with) is what is carried
    assert {n: v for n, v in carried.items() if n in pinned} == \
        {n: v for n, v in pinned.items() if n in carried}
    # the requirements of every carried version this environment has (unpinned ones can drift)
    requires = {n: md.requires(n) or [] for n in carried if md.version(n) == carried[n]}
    assert set(pinned) & set(carried) <= set(requires)
    assert carry.unmet(carried, image, requires=requires) == []


def test_a_requirement_neither_carried_nor_in_the_image_or_too_old_is_named():
    said = carry.unmet({"ipykernel": "7.4.0", "tornado": "6.1"}, {"packaging": None},
                       requires={"ipykernel": ["nest-asyncio2>=1.7.0", "packaging>=22",
                                               "tornado>=6.2",
                                               "appnope>=0.1.2; platform_system == 'Darwin'"]})
    assert said == ["ipykernel 7.4.0 needs nest-asyncio2>=1.7.0: neither carried nor in the image",
                    "ipykernel 7.4.0 needs tornado>=6.2: the machine gets 6.1"]


def test_a_wheels_requirements_are_read_from_its_metadata(tmp_path):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    meta = ("Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: comm>=0.1.1\n"
            "Requires-Dist: appnope; platform_system == 'Darwin'\n\nRequires-Dist: in the body\n")
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("demo-1.0.dist-info/METADATA", meta)
    assert carry.wheel_requires(wheel) == ["comm>=0.1.1", "appnope; platform_system == 'Darwin'"]


def test_diffnb_and_what_its_runs_import_are_on_the_machine():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    # besides pyproject's: the FID network and tables (requirements.txt) and notebook execution
    needed = {canonicalize_name(Requirement(d).name) for d in deps} | {
        "scipy", "pandas", "jinja2", "tabulate", "pytorch-fid", "nbclient", "nbformat", "ipykernel"}
    on_machine = set(carry.read_pins(GPU / "wheels.txt")) | set(carry.read_pins(GPU / "image.txt"))
    assert needed - on_machine == set()
